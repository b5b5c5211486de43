package dev.brook.interop;

import static dev.brook.interop.Common.*;

import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;

/**
 * KafkaProducer with its defaults (idempotent, acks=all) and one codec per topic:
 * creates each topic with AdminClient, produces keyed records with headers
 * (default partitioner: keys spread over the partitions), then reads every
 * partition back and checks each record: content, headers, order, no loss, no
 * duplicates, each at its acknowledged (partition, offset).
 *
 * Usage: ProducerRoundtrip BOOTSTRAP TOPIC:PARTITIONS:CODEC:N ...
 * Prints "DONE topic codec n" or "FAIL topic why" per topic (a failure does not stop the others).
 */
public final class ProducerRoundtrip {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        try (Admin admin = admin(bootstrap)) {
            for (int a = 1; a < args.length; a++) {
                try {
                    one(bootstrap, admin, args[a]);
                } catch (Throwable t) {
                    t.printStackTrace();
                    out("FAIL " + args[a].split(":")[0] + " " + causeChain(t));
                }
            }
        }
    }

    static void one(String bootstrap, Admin admin, String specArg) throws Exception {
        String[] spec = specArg.split(":");
        String topic = spec[0];
        int partitions = Integer.parseInt(spec[1]);
        String codec = spec[2];
        int n = Integer.parseInt(spec[3]);
        createTopic(admin, topic, partitions);
        step("created " + topic);
        Properties p = producerProps(bootstrap);
        if (!codec.equals("default")) p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
        // The producer's defaults, as the producer itself resolves them.
        ProducerConfig cfg = new ProducerConfig(p);
        checkEq(true, cfg.getBoolean(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG), "default enable.idempotence");
        checkEq("-1", cfg.getString(ProducerConfig.ACKS_CONFIG), "default acks");
        Map<Integer, long[]> acked;
        try (KafkaProducer<byte[], byte[]> prod = producer(p)) {
            acked = produceKeyed(prod, topic, 0, n, null, null);
        }
        step("produced " + topic);
        Map<Integer, List<ConsumerRecord<byte[], byte[]>>> got = readAll(bootstrap, topic, partitions, 120_000);
        checkKeyed(got, 0, n, acked);
        int empty = 0;
        for (int q = 0; q < partitions; q++) if (got.getOrDefault(q, List.of()).isEmpty()) empty++;
        check(empty == 0, empty + " of " + partitions + " partitions got no records: keys did not spread");
        out("DONE " + topic + " " + codec + " " + n);
    }
}
