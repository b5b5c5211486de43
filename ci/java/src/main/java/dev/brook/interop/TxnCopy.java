package dev.brook.interop;

import static dev.brook.interop.Common.*;

import java.time.Duration;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.AuthorizationException;
import org.apache.kafka.common.errors.OutOfOrderSequenceException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.errors.TimeoutException;
import org.apache.kafka.common.errors.UnsupportedVersionException;

/**
 * Consume-transform-produce with exactly-once, as Kafka's documentation of
 * KafkaProducer writes it: a classic-protocol group consumer (read_committed,
 * no auto commit) and a transactional producer; per polled batch
 * beginTransaction, send each record's transform (same key, value "out-" +
 * value, same partition number), sendOffsetsToTransaction(the next offsets,
 * consumer.groupMetadata()), commitTransaction. A KafkaException that is not
 * fatal aborts the transaction and rewinds the consumer to the batch's first
 * offsets; a TimeoutException of commitTransaction is retried (the client allows
 * it); a fenced or otherwise fatal error ends the program (exit 3).
 *
 * Usage: TxnCopy BOOTSTRAP INPUT OUTPUT GROUP TXN_ID MAX_POLL_RECORDS MAX_SECONDS [PAUSE_MS]
 * PAUSE_MS (default 0): after sending a batch, flush and pause this long before
 * sendOffsetsToTransaction and the commit -- processing time, during which a
 * kill finds the transaction open with its records in the log.
 * Prints, flushed at once (the test SIGKILLs it):
 *   READY                      initTransactions returned
 *   ASSIGNED p,p,...           the whole assignment after a rebalance
 *   COMMIT records total       a transaction committed; total in this run
 *   ABORT cause                a transaction aborted
 *   RETRY commitTransaction cause   a commit timed out and is retried
 *   DONE total                 every partition of INPUT owned and read to its end (exit 0)
 *   FATAL cause                exit 3
 */
public final class TxnCopy {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], input = args[1], output = args[2], group = args[3], txnId = args[4];
        int maxPoll = Integer.parseInt(args[5]);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[6]));
        long pauseMs = args.length > 7 ? Long.parseLong(args[7]) : 0;

        Properties cp = consumerProps(bootstrap, group);
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, Integer.toString(maxPoll));
        // Replace a killed instance after 6 s instead of the default 45 s.
        cp.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "6000");
        cp.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
        Properties pp = producerProps(bootstrap);
        pp.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);

        int code;
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp);
             KafkaProducer<byte[], byte[]> producer = producer(pp)) {
            code = run(consumer, producer, input, output, deadline, pauseMs);
        } catch (ProducerFencedException | OutOfOrderSequenceException | AuthorizationException
                 | UnsupportedVersionException e) {
            out("FATAL " + causeChain(e));
            code = 3;
        }
        System.exit(code);
    }

    static int run(KafkaConsumer<byte[], byte[]> consumer, KafkaProducer<byte[], byte[]> producer, String input,
                   String output, long deadline, long pauseMs) throws InterruptedException {
        producer.initTransactions();
        out("READY");
        Set<Integer> assigned = new TreeSet<>();
        consumer.subscribe(List.of(input), new ConsumerRebalanceListener() {
            @Override
            public void onPartitionsRevoked(Collection<TopicPartition> parts) {
                for (TopicPartition tp : parts) assigned.remove(tp.partition());
            }

            @Override
            public void onPartitionsAssigned(Collection<TopicPartition> parts) {
                for (TopicPartition tp : parts) assigned.add(tp.partition());
                out("ASSIGNED " + join(assigned));
            }
        });
        long total = 0;
        while (System.nanoTime() < deadline) {
            ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofMillis(500));
            if (records.isEmpty()) {
                if (finished(consumer, input, assigned)) {
                    out("DONE " + total);
                    return 0;
                }
                continue;
            }
            if (transact(consumer, producer, output, records, pauseMs)) {
                total += records.count();
                out("COMMIT " + records.count() + " " + total);
            } else {
                for (TopicPartition tp : records.partitions())
                    consumer.seek(tp, records.records(tp).get(0).offset());
            }
        }
        out("FATAL not done in time");
        return 3;
    }

    /** One transaction for the batch; true if it committed. Fatal errors propagate. */
    static boolean transact(KafkaConsumer<byte[], byte[]> consumer, KafkaProducer<byte[], byte[]> producer,
                            String output, ConsumerRecords<byte[], byte[]> records, long pauseMs)
            throws InterruptedException {
        producer.beginTransaction();
        try {
            Map<TopicPartition, OffsetAndMetadata> next = new HashMap<>();
            for (ConsumerRecord<byte[], byte[]> r : records) {
                byte[] v = bytes("out-" + str(r.value()));
                producer.send(new ProducerRecord<>(output, r.partition(), r.key(), v));
                next.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
            }
            if (pauseMs > 0) {
                producer.flush();
                Thread.sleep(pauseMs);
            }
            producer.sendOffsetsToTransaction(next, consumer.groupMetadata());
            for (int attempt = 0; ; attempt++) {
                try {
                    producer.commitTransaction();
                    return true;
                } catch (TimeoutException e) {
                    if (attempt >= 5) throw e;
                    out("RETRY commitTransaction " + causeChain(e));
                }
            }
        } catch (ProducerFencedException | OutOfOrderSequenceException | AuthorizationException
                 | UnsupportedVersionException e) {
            throw e;
        } catch (KafkaException e) {
            out("ABORT " + causeChain(e));
            producer.abortTransaction();
            return false;
        }
    }

    /** Every partition of the input is ours and read to its end (the input is
     * written before the program starts and is not transactional). */
    static boolean finished(KafkaConsumer<byte[], byte[]> consumer, String input, Set<Integer> assigned) {
        List<PartitionInfo> parts = consumer.partitionsFor(input, Duration.ofSeconds(10));
        if (parts.size() != assigned.size()) return false;
        Map<TopicPartition, Long> ends = consumer.endOffsets(consumer.assignment(), Duration.ofSeconds(10));
        for (Map.Entry<TopicPartition, Long> e : ends.entrySet())
            if (consumer.position(e.getKey(), Duration.ofSeconds(10)) < e.getValue()) return false;
        return true;
    }

    static String join(Set<Integer> parts) {
        StringBuilder sb = new StringBuilder();
        for (int p : parts) sb.append(sb.length() > 0 ? "," : "").append(p);
        return sb.length() == 0 ? "-" : sb.toString();
    }
}
