package dev.brook.interop;

import static dev.brook.interop.Common.*;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.RecordTooLargeException;

/**
 * Smaller behaviours a Java application relies on, one JVM for all:
 *   auto-create       a producer writing to a topic that does not exist (auto.create.topics.enable)
 *   small-fetch       a consumer whose fetch limits are smaller than one batch still makes progress (KIP-74)
 *   too-large         a record above the broker's message.max.bytes fails with RecordTooLargeException
 *   static-membership a static member (group.instance.id) that restarts gets its partitions back
 *                     without a rebalance of the other member
 *
 * Usage: Probes BOOTSTRAP PREFIX SCENARIO... (or all)
 * Prints "RESULT scenario OK" or "RESULT scenario FAIL why" per scenario.
 */
public final class Probes {
    static String bootstrap, prefix;

    public static void main(String[] args) throws Exception {
        bootstrap = args[0];
        prefix = args[1];
        Set<String> want = Set.copyOf(List.of(args).subList(2, args.length));
        String[] order = {"auto-create", "small-fetch", "too-large", "static-membership"};
        for (String s : order) {
            if (!want.contains("all") && !want.contains(s)) continue;
            try {
                switch (s) {
                    case "auto-create": autoCreate(); break;
                    case "small-fetch": smallFetch(); break;
                    case "too-large": tooLarge(); break;
                    case "static-membership": staticMembership(); break;
                    default: throw new IllegalArgumentException(s);
                }
                out("RESULT " + s + " OK");
            } catch (Throwable t) {
                t.printStackTrace();
                out("RESULT " + s + " FAIL " + causeChain(t));
            }
        }
    }

    static long deadline(long s) {
        return System.nanoTime() + TimeUnit.SECONDS.toNanos(s);
    }

    static void autoCreate() throws Exception {
        String topic = prefix + "-auto";
        Map<Integer, long[]> acked;
        try (KafkaProducer<byte[], byte[]> prod = producer(producerProps(bootstrap))) {
            acked = produceKeyed(prod, topic, 0, 300, null, null);
            int parts = prod.partitionsFor(topic).size();
            out("INFO auto-created " + topic + " with " + parts + " partitions");
            checkKeyed(readAll(bootstrap, topic, parts, 60_000), 0, 300, acked);
        }
        step("auto-create");
    }

    static void smallFetch() throws Exception {
        String topic = prefix + "-smallfetch";
        try (Admin admin = admin(bootstrap)) {
            createTopic(admin, topic, 1);
        }
        int n = 40;
        byte[][] values = new byte[n][];
        java.util.Random rnd = new java.util.Random(42);
        try (KafkaProducer<byte[], byte[]> prod = producer(producerProps(bootstrap))) {
            List<java.util.concurrent.Future<RecordMetadata>> fs = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                values[i] = new byte[20_000];
                rnd.nextBytes(values[i]);
                fs.add(prod.send(new ProducerRecord<>(topic, 0, bytes(key(i)), values[i])));
            }
            for (var f : fs) f.get(60, TimeUnit.SECONDS);
        }
        Properties p = consumerProps(bootstrap, null);
        p.put(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, "1024");
        p.put(ConsumerConfig.FETCH_MAX_BYTES_CONFIG, "1024");
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            c.assign(List.of(tp));
            c.seekToBeginning(List.of(tp));
            List<ConsumerRecord<byte[], byte[]>> got = new ArrayList<>();
            long dl = deadline(60);
            while (got.size() < n) {
                check(System.nanoTime() < dl, "read " + got.size() + " of " + n + " 20 kB records with 1 kB fetch limits");
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) got.add(r);
            }
            for (int i = 0; i < n; i++) {
                checkEq((long) i, got.get(i).offset(), "offset");
                checkEq(key(i), str(got.get(i).key()), "key at " + i);
                check(java.util.Arrays.equals(values[i], got.get(i).value()), "value at " + i);
            }
        }
        step("small-fetch");
    }

    static void tooLarge() throws Exception {
        String topic = prefix + "-large";
        try (Admin admin = admin(bootstrap)) {
            createTopic(admin, topic, 1);
        }
        Properties p = producerProps(bootstrap);
        p.put(ProducerConfig.MAX_REQUEST_SIZE_CONFIG, Integer.toString(8 << 20));
        p.put(ProducerConfig.BUFFER_MEMORY_CONFIG, Integer.toString(32 << 20));
        try (KafkaProducer<byte[], byte[]> prod = producer(p)) {
            byte[] big = new byte[2 << 20];
            new java.util.Random(1).nextBytes(big);
            long t0 = System.nanoTime();
            try {
                RecordMetadata md = prod.send(new ProducerRecord<>(topic, 0, bytes("big"), big)).get(60, TimeUnit.SECONDS);
                throw new AssertionError("a 2 MiB record was accepted at " + md);
            } catch (ExecutionException e) {
                out("INFO 2 MiB record failed after " + (System.nanoTime() - t0) / 1_000_000 + " ms: " + causeChain(e.getCause()));
                check(e.getCause() instanceof RecordTooLargeException, "expected RecordTooLargeException, got " + causeChain(e.getCause()));
            }
            // the producer still works afterwards
            RecordMetadata md = prod.send(new ProducerRecord<>(topic, 0, bytes("small"), bytes("v"))).get(60, TimeUnit.SECONDS);
            checkEq(0L, md.offset(), "offset of the next record");
        }
        step("too-large");
    }

    /** One static member: a consumer and what its listener saw. */
    static final class Member {
        final String name;
        final KafkaConsumer<byte[], byte[]> c;
        final List<String> events = new ArrayList<>();
        final Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> records = new HashMap<>();

        Member(String group, String topic, String instance, String name) {
            this.name = name;
            Properties p = consumerProps(bootstrap, group);
            p.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, instance);
            p.put(ConsumerConfig.CLIENT_ID_CONFIG, name);
            p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
            p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
            p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "20000");
            p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
            c = new KafkaConsumer<>(p);
            c.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                public void onPartitionsRevoked(Collection<TopicPartition> parts) {
                    events.add("revoked " + parts(parts));
                }

                public void onPartitionsAssigned(Collection<TopicPartition> parts) {
                    events.add("assigned " + parts(parts));
                }
            });
        }

        void poll() {
            for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(100))) {
                records.computeIfAbsent(new TopicPartition(r.topic(), r.partition()), k -> new ArrayList<>()).add(r);
            }
            if (!records.isEmpty()) c.commitSync();
        }

        int count() {
            return records.values().stream().mapToInt(List::size).sum();
        }

        public String toString() {
            return name + " assignment=" + parts(c.assignment()) + " events=" + events + " records=" + count();
        }
    }

    static String parts(Collection<TopicPartition> tps) {
        TreeSet<Integer> s = new TreeSet<>();
        for (TopicPartition tp : tps) s.add(tp.partition());
        return s.toString();
    }

    static void staticMembership() throws Exception {
        String topic = prefix + "-static";
        String group = topic + "-g";
        int parts = 4;
        try (Admin admin = admin(bootstrap)) {
            createTopic(admin, topic, parts);
        }
        KafkaProducer<byte[], byte[]> prod = producer(producerProps(bootstrap));
        Map<Integer, long[]> acked = new HashMap<>(produceKeyed(prod, topic, 0, 400, i -> i % parts, null));
        Member a = new Member(group, topic, "inst-a", "static-a");
        Member b = new Member(group, topic, "inst-b", "static-b");
        long dl = deadline(60);
        while (true) {
            a.poll();
            b.poll();
            if (a.count() + b.count() == 400 && a.c.assignment().size() + b.c.assignment().size() == parts
                    && !a.c.assignment().isEmpty() && !b.c.assignment().isEmpty()) break;
            check(System.nanoTime() < dl, "two static members did not share the partitions and read everything: " + a + "; " + b);
        }
        step("static-two-members");
        Set<TopicPartition> aParts = Set.copyOf(a.c.assignment()), bParts = Set.copyOf(b.c.assignment());
        int aEvents = a.events.size();
        int bCount = b.count();
        // A static member's close() does not leave the group (KIP-345): its partitions wait for it.
        b.c.close();
        long t0 = System.nanoTime();
        Member b2 = new Member(group, topic, "inst-b", "static-b2");
        dl = deadline(15);
        while (b2.c.assignment().isEmpty()) {
            a.poll();
            b2.poll();
            check(System.nanoTime() < dl, "the restarted static member got no assignment within 15 s "
                    + "(session timeout 20 s): " + a + "; " + b2);
        }
        long ms = (System.nanoTime() - t0) / 1_000_000;
        out("INFO restarted static member assigned after " + ms + " ms: " + b2 + "; " + a);
        checkEq(bParts, Set.copyOf(b2.c.assignment()), "the restarted static member's assignment");
        for (int k = 0; k < 10; k++) {
            a.poll();
            b2.poll();
        }
        checkEq(aParts, Set.copyOf(a.c.assignment()), "the other member's assignment");
        check(a.events.size() == aEvents, "the other member saw a rebalance: " + a.events.subList(aEvents, a.events.size()));
        // both continue from the committed offsets: the next records only, each once
        acked.putAll(produceKeyed(prod, topic, 400, 40, i -> i % parts, null));
        prod.close();
        int aBefore = a.count();
        dl = deadline(30);
        while (a.count() - aBefore + b2.count() < 40) {
            a.poll();
            b2.poll();
            check(System.nanoTime() < dl, "after the restart: " + a + "; " + b2);
        }
        for (int k = 0; k < 5; k++) {
            a.poll();
            b2.poll();
        }
        checkEq(40, a.count() - aBefore + b2.count(), "records read after the restart");
        for (List<ConsumerRecord<byte[], byte[]>> rs : b2.records.values())
            for (ConsumerRecord<byte[], byte[]> r : rs) {
                int i = keyIndex(r.key());
                check(i >= 400, "the restarted member re-read k" + i + " (committed before the restart)");
                check(acked.get(i)[0] == r.partition() && acked.get(i)[1] == r.offset(), "k" + i + " position");
            }
        a.c.close();
        b2.c.close();
        step("static-restart (b had read " + bCount + ")");
    }
}
