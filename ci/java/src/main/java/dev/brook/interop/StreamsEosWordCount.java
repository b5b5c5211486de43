package dev.brook.interop;

import static dev.brook.interop.Common.*;

import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.config.TopicConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * A Kafka Streams word count with processing.guarantee=exactly_once_v2: input
 * records keyed by word, groupByKey().count() into a persistent (RocksDB)
 * store with a changelog topic, every update of a count written to OUTPUT
 * (key word, value the count as a big-endian long). The record cache is off
 * (statestore.cache.max.bytes=0), so each input record yields exactly one
 * output update: read committed, the updates of one word are 1, 2, 3, ...
 * Streams creates its changelog topic itself (CreateTopics), here with
 * cleanup.policy=delete and unlimited retention instead of Streams' default
 * compact, which Brook does not implement: restoring the store reads every
 * update instead of the latest per word, the same state either way.
 *
 * Usage: StreamsEosWordCount BOOTSTRAP APPLICATION_ID INPUT OUTPUT STATE_DIR MAX_SECONDS
 * Prints "STATE old new" on every state change; runs until SIGTERM (closes
 * cleanly, exit 0), SIGKILL, or MAX_SECONDS (exit 4); exit 3 if it reaches
 * ERROR. The state directory is kept across restarts, as a deployment would.
 */
public final class StreamsEosWordCount {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], appId = args[1], input = args[2], output = args[3], stateDir = args[4];
        long maxSeconds = Long.parseLong(args[5]);
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, "0");
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, "1");
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, "1");
        // A killed instance's member is replaced after 6 s instead of 45 s.
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), "6000");
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), "1000");

        StreamsBuilder b = new StreamsBuilder();
        b.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .groupByKey()
                .count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("word-counts")
                        .withLoggingEnabled(Map.of(TopicConfig.CLEANUP_POLICY_CONFIG, TopicConfig.CLEANUP_POLICY_DELETE,
                                TopicConfig.RETENTION_MS_CONFIG, "-1")))
                .toStream()
                .to(output, Produced.with(Serdes.String(), Serdes.Long()));

        KafkaStreams streams = new KafkaStreams(b.build(), p);
        CountDownLatch failed = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            out("STATE " + before + " " + now);
            if (now == KafkaStreams.State.ERROR) failed.countDown();
        });
        streams.setUncaughtExceptionHandler(e -> {
            out("UNCAUGHT " + causeChain(e));
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(java.time.Duration.ofSeconds(20));
            out("CLOSED");
        }));
        streams.start();
        if (failed.await(maxSeconds, TimeUnit.SECONDS)) {
            out("FATAL streams reached ERROR");
            Runtime.getRuntime().halt(3);
        }
        out("FATAL still running after " + maxSeconds + "s");
        Runtime.getRuntime().halt(4);
    }
}
