package dev.brook.interop;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/** Helpers shared by the Java interop programs: the same keys and payloads as
 * ci/tests/util.py (key "k{i}", value util.payload(i)), client factories with
 * only the settings a plain application sets, and a check() that fails loudly. */
final class Common {
    private Common() {}

    static final long T0 = System.nanoTime();

    static String key(int i) {
        return "k" + i;
    }

    /** util.payload(i): "v{i}:" + "%08d" % i repeated 1 + i % 9 times. */
    static byte[] payload(int i) {
        StringBuilder sb = new StringBuilder("v").append(i).append(':');
        String block = String.format("%08d", i);
        for (int r = 0; r < 1 + i % 9; r++) sb.append(block);
        return sb.toString().getBytes(StandardCharsets.UTF_8);
    }

    static int keyIndex(byte[] key) {
        String s = new String(key, StandardCharsets.UTF_8);
        check(s.startsWith("k"), "bad key " + s);
        return Integer.parseInt(s.substring(1));
    }

    static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static String str(byte[] b) {
        return b == null ? null : new String(b, StandardCharsets.UTF_8);
    }

    static void check(boolean cond, String msg) {
        if (!cond) throw new AssertionError(msg);
    }

    static void checkEq(Object want, Object got, String what) {
        if (want == null ? got != null : !want.equals(got))
            throw new AssertionError(what + ": expected " + want + ", got " + got);
    }

    static void out(String line) {
        System.out.println(line);
        System.out.flush();
    }

    static void step(String name) {
        out(String.format("STEP %s %.1fs", name, (System.nanoTime() - T0) / 1e9));
    }

    static Properties adminProps(String bootstrap) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        return p;
    }

    static Admin admin(String bootstrap) {
        return Admin.create(adminProps(bootstrap));
    }

    /** Everything default but the serializers (and whatever the caller adds). */
    static Properties producerProps(String bootstrap) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        return p;
    }

    static KafkaProducer<byte[], byte[]> producer(Properties p) {
        return new KafkaProducer<>(p);
    }

    static Properties consumerProps(String bootstrap, String group) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        if (group != null) {
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        }
        return p;
    }

    static void createTopic(Admin admin, String topic, int partitions) throws Exception {
        admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all().get(30, TimeUnit.SECONDS);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (true) {
            try {
                TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get(10, TimeUnit.SECONDS).get(topic);
                if (d.partitions().size() == partitions) return;
            } catch (Exception e) {
                if (System.nanoTime() > deadline) throw e;
            }
            check(System.nanoTime() < deadline, "topic " + topic + " not in metadata with " + partitions + " partitions");
            Thread.sleep(100);
        }
    }

    /** Produces keys k{start}..k{start+n-1} (value payload(i), header "i"); returns
     * key index -> acknowledged (partition, offset). */
    static Map<Integer, long[]> produceKeyed(KafkaProducer<byte[], byte[]> prod, String topic, int start, int n,
                                           java.util.function.IntFunction<Integer> partition,
                                           java.util.function.IntToLongFunction ts) throws Exception {
        List<java.util.concurrent.Future<RecordMetadata>> futs = new ArrayList<>(n);
        for (int i = start; i < start + n; i++) {
            ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(topic, partition == null ? null : partition.apply(i), ts == null ? null : ts.applyAsLong(i),
                    bytes(key(i)), payload(i));
            r.headers().add("i", bytes(Integer.toString(i))).add("src", bytes("java"));
            futs.add(prod.send(r));
        }
        prod.flush();
        Map<Integer, long[]> acked = new HashMap<>();
        for (int j = 0; j < n; j++) {
            RecordMetadata md = futs.get(j).get(60, TimeUnit.SECONDS);
            acked.put(start + j, new long[] {md.partition(), md.offset()});
        }
        return acked;
    }

    /** Reads the given partitions from the beginning to their end offsets (taken
     * up front) with assign(); no group. */
    static Map<Integer, List<ConsumerRecord<byte[], byte[]>>> readAll(String bootstrap, String topic, int partitions,
                                                                     long timeoutMs) {
        Map<Integer, List<ConsumerRecord<byte[], byte[]>>> out = new HashMap<>();
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(consumerProps(bootstrap, null))) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < partitions; p++) tps.add(new TopicPartition(topic, p));
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> ends = c.endOffsets(tps, Duration.ofSeconds(30));
            long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
            while (true) {
                boolean done = true;
                for (TopicPartition tp : tps) if (c.position(tp) < ends.get(tp)) done = false;
                if (done) break;
                check(System.nanoTime() < deadline, "readAll " + topic + " timed out; ends " + ends);
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500)))
                    out.computeIfAbsent(r.partition(), k -> new ArrayList<>()).add(r);
            }
            for (TopicPartition tp : tps) {
                int got = out.getOrDefault(tp.partition(), List.of()).size();
                checkEq(ends.get(tp), (long) got, "records read from " + tp + " (end offset)");
            }
        }
        return out;
    }

    /** util.check_keyed in Java: exactly keys start..start+n-1, each once, value ==
     * payload(i), header i == i, offsets dense from 0 and i increasing per
     * partition, and each at its acknowledged (partition, offset) if acked != null. */
    static void checkKeyed(Map<Integer, List<ConsumerRecord<byte[], byte[]>>> byPartition, int start, int n,
                           Map<Integer, long[]> acked) {
        Set<Integer> seen = new java.util.HashSet<>();
        for (Map.Entry<Integer, List<ConsumerRecord<byte[], byte[]>>> e : byPartition.entrySet()) {
            int p = e.getKey();
            int last = -1;
            long expectOff = 0;
            for (ConsumerRecord<byte[], byte[]> r : e.getValue()) {
                checkEq(expectOff, r.offset(), "partition " + p + " offsets dense from 0");
                expectOff++;
                int i = keyIndex(r.key());
                check(seen.add(i), "duplicate key k" + i + " at " + p + "/" + r.offset());
                check(java.util.Arrays.equals(payload(i), r.value()),
                        "partition " + p + " offset " + r.offset() + " key k" + i + ": bad value " + str(r.value()));
                check(i > last, "partition " + p + " order broken at offset " + r.offset() + ": " + i + " after " + last);
                last = i;
                Header h = r.headers().lastHeader("i");
                check(h != null && Integer.toString(i).equals(str(h.value())), "record k" + i + ": bad header i");
                Header s = r.headers().lastHeader("src");
                check(s != null && "java".equals(str(s.value())), "record k" + i + ": bad header src");
                if (acked != null) {
                    long[] a = acked.get(i);
                    check(a != null && a[0] == p && a[1] == r.offset(), "record k" + i + " at " + p + "/" + r.offset()
                            + " but acknowledged at " + (a == null ? "nothing" : a[0] + "/" + a[1]));
                }
            }
        }
        List<Integer> missing = new ArrayList<>();
        for (int i = start; i < start + n; i++) if (!seen.contains(i)) missing.add(i);
        check(missing.isEmpty(), missing.size() + " keys missing, e.g. " + missing.subList(0, Math.min(5, missing.size())));
        checkEq(n, seen.size(), "distinct keys");
    }

    static String causeChain(Throwable t) {
        StringBuilder sb = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) {
            if (sb.length() > 0) sb.append(" <- ");
            sb.append(c.getClass().getName()).append(": ").append(c.getMessage());
            if (c.getCause() == c) break;
        }
        return sb.toString().replace('\n', ' ');
    }

    static Throwable unwrap(Throwable t) {
        while ((t instanceof java.util.concurrent.ExecutionException || t instanceof java.util.concurrent.CompletionException)
                && t.getCause() != null) t = t.getCause();
        return t;
    }

    static <T> Set<T> setOf(java.util.Collection<T> c) {
        return Collections.unmodifiableSet(new java.util.HashSet<>(c));
    }
}
