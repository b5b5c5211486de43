package dev.brook.interop;

import static dev.brook.interop.Common.*;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.common.TopicPartition;

/**
 * One KafkaConsumer in a classic group (subscribe) going through the consumer
 * API: poll everything, commitSync (positions and explicit offsets with
 * metadata), commitAsync with a callback, committed(), seek / seekToBeginning /
 * seekToEnd / position, beginningOffsets / endOffsets, offsetsForTimes,
 * pause / resume, and a second member of the group resuming at the committed
 * offsets. Every record is checked against what was acknowledged.
 *
 * Usage: ConsumerApis BOOTSTRAP TOPIC GROUP
 * Prints "STEP name" lines and "PASS" at the end; throws on the first mismatch.
 */
public final class ConsumerApis {
    static final int P = 3;
    static final int N = 900;
    static final long BASE = (System.currentTimeMillis() / 1000 - 86_400) * 1000; // a day ago, whole seconds

    static long ts(int i) {
        return BASE + i * 1000L;
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1], group = args[2];
        List<TopicPartition> tps = new ArrayList<>();
        for (int p = 0; p < P; p++) tps.add(new TopicPartition(topic, p));
        try (Admin admin = admin(bootstrap)) {
            createTopic(admin, topic, P);
        }
        KafkaProducer<byte[], byte[]> prod = producer(producerProps(bootstrap));
        // key i goes to partition i % P, with timestamp ts(i): partition p holds
        // i = p, p+3, ... at offsets 0, 1, ..., so record i is at offset i / P.
        Map<Integer, long[]> acked = produceKeyed(prod, topic, 0, N, i -> i % P, ConsumerApis::ts);
        for (int i = 0; i < N; i++)
            check(acked.get(i)[0] == i % P && acked.get(i)[1] == i / P, "k" + i + " acknowledged at "
                    + acked.get(i)[0] + "/" + acked.get(i)[1] + ", expected " + (i % P) + "/" + (i / P));
        step("produced");

        Properties cp = consumerProps(bootstrap, group);
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.CLIENT_ID_CONFIG, "java-apis-a");
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(cp)) {
            c.subscribe(List.of(topic));
            // -- poll everything (subscribe: the group assigns all partitions to the one member)
            Map<Integer, List<ConsumerRecord<byte[], byte[]>>> got = new HashMap<>();
            int n = 0;
            long deadline = deadline(60);
            while (n < N) {
                check(System.nanoTime() < deadline, "read " + n + " of " + N + " records; assignment " + c.assignment());
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    got.computeIfAbsent(r.partition(), k -> new ArrayList<>()).add(r);
                    n++;
                    checkEq(ts(keyIndex(r.key())), r.timestamp(), "timestamp of k" + keyIndex(r.key()));
                }
            }
            checkKeyed(got, 0, N, acked);
            checkEq(Set.copyOf(tps), c.assignment(), "assignment");
            for (TopicPartition tp : tps) checkEq((long) (N / P), c.position(tp), "position " + tp);
            check(c.poll(Duration.ofMillis(300)).isEmpty(), "records beyond the produced ones");
            step("poll-all");

            // -- commitSync() commits the positions
            c.commitSync();
            Map<TopicPartition, OffsetAndMetadata> com = c.committed(Set.copyOf(tps), Duration.ofSeconds(30));
            for (TopicPartition tp : tps) checkEq((long) (N / P), com.get(tp).offset(), "committed after commitSync() " + tp);
            step("commitSync-positions");

            // -- commitSync(offsets) with metadata
            Map<TopicPartition, OffsetAndMetadata> want = new HashMap<>();
            for (TopicPartition tp : tps) want.put(tp, new OffsetAndMetadata(10 + 10 * tp.partition(), "sync-" + tp.partition()));
            c.commitSync(want, Duration.ofSeconds(30));
            com = c.committed(Set.copyOf(tps), Duration.ofSeconds(30));
            for (TopicPartition tp : tps) {
                checkEq(want.get(tp).offset(), com.get(tp).offset(), "committed offset " + tp);
                checkEq(want.get(tp).metadata(), com.get(tp).metadata(), "committed metadata " + tp);
            }
            step("commitSync-offsets");

            // -- commitAsync(offsets, callback): the callback runs inside poll()
            Map<TopicPartition, OffsetAndMetadata> want2 = new HashMap<>();
            for (TopicPartition tp : tps) want2.put(tp, new OffsetAndMetadata(11 + 10 * tp.partition(), "async-" + tp.partition()));
            AtomicReference<Object> cb = new AtomicReference<>();
            c.commitAsync(want2, (offsets, exc) -> cb.set(exc != null ? exc : offsets));
            deadline = deadline(30);
            while (cb.get() == null) {
                check(System.nanoTime() < deadline, "commitAsync callback not called within 30 s");
                check(c.poll(Duration.ofMillis(100)).isEmpty(), "records while waiting for commitAsync");
            }
            check(!(cb.get() instanceof Exception), "commitAsync failed: " + cb.get());
            checkEq(want2, cb.get(), "offsets passed to the commitAsync callback");
            com = c.committed(Set.copyOf(tps), Duration.ofSeconds(30));
            for (TopicPartition tp : tps) {
                checkEq(want2.get(tp).offset(), com.get(tp).offset(), "committed offset after commitAsync " + tp);
                checkEq(want2.get(tp).metadata(), com.get(tp).metadata(), "committed metadata after commitAsync " + tp);
            }
            // commitAsync() without arguments: positions, no callback; commitSync flushes it
            c.commitAsync();
            c.commitSync(Map.of(), Duration.ofSeconds(30));
            com = c.committed(Set.copyOf(tps), Duration.ofSeconds(30));
            for (TopicPartition tp : tps) checkEq((long) (N / P), com.get(tp).offset(), "committed after commitAsync() " + tp);
            step("commitAsync");

            // -- seek: re-read partition 1 from offset 100
            TopicPartition t1 = tps.get(1);
            c.seek(t1, 100);
            checkEq(100L, c.position(t1), "position after seek");
            List<ConsumerRecord<byte[], byte[]>> again = new ArrayList<>();
            deadline = deadline(30);
            while (again.size() < N / P - 100) {
                check(System.nanoTime() < deadline, "re-read " + again.size() + " records after seek");
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    checkEq(1, r.partition(), "partition of a record after seek (others are at their end)");
                    again.add(r);
                }
            }
            for (int k = 0; k < again.size(); k++) {
                ConsumerRecord<byte[], byte[]> r = again.get(k);
                long off = 100 + k;
                checkEq(off, r.offset(), "offset after seek");
                int i = (int) off * P + 1;
                checkEq(key(i), str(r.key()), "key at 1/" + off);
                check(java.util.Arrays.equals(payload(i), r.value()), "value at 1/" + off);
            }
            // seek with OffsetAndMetadata, seekToBeginning / seekToEnd
            c.seek(tps.get(2), new OffsetAndMetadata(299));
            List<ConsumerRecord<byte[], byte[]>> one = pollN(c, 1, 30);
            checkEq(2, one.get(0).partition(), "partition after seek(2, 299)");
            checkEq(299L, one.get(0).offset(), "offset after seek(2, 299)");
            checkEq(key(299 * P + 2), str(one.get(0).key()), "key at 2/299");
            c.seekToBeginning(List.of(tps.get(2)));
            checkEq(0L, c.position(tps.get(2)), "position after seekToBeginning");
            c.seekToEnd(List.of(tps.get(2)));
            checkEq((long) (N / P), c.position(tps.get(2)), "position after seekToEnd");
            Map<TopicPartition, Long> begins = c.beginningOffsets(tps, Duration.ofSeconds(30));
            Map<TopicPartition, Long> ends = c.endOffsets(tps, Duration.ofSeconds(30));
            for (TopicPartition tp : tps) {
                checkEq(0L, begins.get(tp), "beginningOffsets " + tp);
                checkEq((long) (N / P), ends.get(tp), "endOffsets " + tp);
            }
            step("seek");

            // -- offsetsForTimes: the first offset whose timestamp is >= the target
            Map<TopicPartition, Long> q = new HashMap<>();
            q.put(tps.get(0), ts(150));       // exactly record i=150 (partition 0, offset 50)
            q.put(tps.get(1), ts(151) - 500); // between i=148 (offset 49) and i=151 (offset 50)
            q.put(tps.get(2), ts(N) + 60_000); // after the last record
            Map<TopicPartition, OffsetAndTimestamp> ft = c.offsetsForTimes(q, Duration.ofSeconds(30));
            check(ft.get(tps.get(0)) != null && ft.get(tps.get(0)).offset() == 50 && ft.get(tps.get(0)).timestamp() == ts(150),
                    "offsetsForTimes exact: " + ft.get(tps.get(0)));
            check(ft.get(tps.get(1)) != null && ft.get(tps.get(1)).offset() == 50 && ft.get(tps.get(1)).timestamp() == ts(151),
                    "offsetsForTimes between: " + ft.get(tps.get(1)));
            check(ft.containsKey(tps.get(2)) && ft.get(tps.get(2)) == null, "offsetsForTimes after the end: " + ft);
            Map<TopicPartition, OffsetAndTimestamp> ft0 = c.offsetsForTimes(Map.of(tps.get(0), 0L), Duration.ofSeconds(30));
            check(ft0.get(tps.get(0)) != null && ft0.get(tps.get(0)).offset() == 0 && ft0.get(tps.get(0)).timestamp() == ts(0),
                    "offsetsForTimes(0): " + ft0);
            // seek to the offset found, read that record
            c.seek(tps.get(0), ft.get(tps.get(0)).offset());
            one = pollN(c, N / P - 50, 30);
            for (int k = 0; k < one.size(); k++) {
                checkEq(0, one.get(k).partition(), "partition after seek to the offset for ts(150)");
                checkEq(50L + k, one.get(k).offset(), "offset after seek to the offset for ts(150)");
                checkEq(key(150 + P * k), str(one.get(k).key()), "key after seek to the offset for ts(150)");
            }
            c.seekToEnd(tps);
            for (TopicPartition tp : tps) c.position(tp);
            step("offsetsForTimes");

            // -- pause / resume
            c.pause(List.of(tps.get(0)));
            checkEq(Set.of(tps.get(0)), c.paused(), "paused()");
            Map<Integer, long[]> acked2 = produceKeyed(prod, topic, N, 30, null, null); // 30 more, default partitioner
            Map<Integer, Integer> perPart = new HashMap<>();
            for (long[] a : acked2.values()) perPart.merge((int) a[0], 1, Integer::sum);
            int unpaused = perPart.getOrDefault(1, 0) + perPart.getOrDefault(2, 0);
            int paused0 = perPart.getOrDefault(0, 0);
            List<ConsumerRecord<byte[], byte[]>> more = new ArrayList<>();
            deadline = deadline(30);
            while (more.size() < unpaused) {
                check(System.nanoTime() < deadline, "got " + more.size() + " of " + unpaused + " records from unpaused partitions");
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) more.add(r);
            }
            long quiet = deadline(1);
            while (System.nanoTime() < quiet) for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) more.add(r);
            for (ConsumerRecord<byte[], byte[]> r : more) check(r.partition() != 0, "record from paused partition 0 at offset " + r.offset());
            checkEq(unpaused, more.size(), "records from the unpaused partitions");
            c.resume(List.of(tps.get(0)));
            check(c.paused().isEmpty(), "paused() after resume: " + c.paused());
            List<ConsumerRecord<byte[], byte[]>> rest = paused0 == 0 ? List.of() : pollN(c, paused0, 30);
            for (ConsumerRecord<byte[], byte[]> r : rest) checkEq(0, r.partition(), "partition after resume");
            more.addAll(rest);
            for (ConsumerRecord<byte[], byte[]> r : more) {
                int i = keyIndex(r.key());
                long[] a = acked2.get(i);
                check(a != null && a[0] == r.partition() && a[1] == r.offset(), "k" + i + " at " + r.partition() + "/" + r.offset());
                check(java.util.Arrays.equals(payload(i), r.value()), "value of k" + i);
            }
            checkEq(30, (int) more.stream().map(r -> keyIndex(r.key())).distinct().count(), "distinct new keys");
            step("pause-resume (" + paused0 + " records held back on partition 0)");
            c.commitSync();
        }
        step("closed");

        // -- a new member of the group starts at the committed offsets
        Map<Integer, long[]> acked3 = produceKeyed(prod, topic, N + 30, 9, null, null);
        prod.close();
        cp.put(ConsumerConfig.CLIENT_ID_CONFIG, "java-apis-b");
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(cp)) {
            c.subscribe(List.of(topic));
            List<ConsumerRecord<byte[], byte[]>> got = pollN(c, 9, 60);
            for (ConsumerRecord<byte[], byte[]> r : got) {
                int i = keyIndex(r.key());
                check(i >= N + 30, "second member re-read k" + i + " at " + r.partition() + "/" + r.offset()
                        + " (below the committed offset)");
                long[] a = acked3.get(i);
                check(a[0] == r.partition() && a[1] == r.offset(), "k" + i + " position");
            }
            long quiet = deadline(1);
            while (System.nanoTime() < quiet)
                check(c.poll(Duration.ofMillis(200)).isEmpty(), "second member got more than the 9 new records");
        }
        step("second-member-resumes");
        out("PASS");
    }

    static long deadline(long seconds) {
        return System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
    }

    static List<ConsumerRecord<byte[], byte[]>> pollN(KafkaConsumer<byte[], byte[]> c, int n, long seconds) {
        List<ConsumerRecord<byte[], byte[]>> out = new ArrayList<>();
        long deadline = deadline(seconds);
        while (out.size() < n) {
            check(System.nanoTime() < deadline, "polled " + out.size() + " of " + n + " records in " + seconds + " s");
            for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) out.add(r);
        }
        if (out.size() != n) {
            StringBuilder sb = new StringBuilder();
            for (ConsumerRecord<byte[], byte[]> r : out.subList(0, Math.min(out.size(), 10)))
                sb.append(' ').append(r.partition()).append('/').append(r.offset()).append('=').append(str(r.key()));
            throw new AssertionError("polled " + out.size() + " records, expected " + n + "; first:" + sb
                    + "; positions " + c.assignment().stream().map(tp -> tp + "@" + c.position(tp)).toList());
        }
        return out;
    }
}
