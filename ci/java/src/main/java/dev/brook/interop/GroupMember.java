package dev.brook.interop;

import static dev.brook.interop.Common.*;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.time.Duration;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;

/**
 * One member of a classic-protocol consumer group (subscribe, manual commitSync
 * after every polled batch), for the kill-a-member test. Writes to stdout, one
 * line per event, flushed at once so that the test sees everything up to a SIGKILL:
 *
 *   ASSIGNED p,p,... added p,p,...   onPartitionsAssigned: the whole assignment, then what was added
 *   REVOKED p,p,...         onPartitionsRevoked
 *   LOST p,p,...            onPartitionsLost
 *   (an empty list is "-")
 *   REC p offset i          a record, its value and header already checked against key k{i}
 *   COMMITTED p:off,...     commitSync of the next offsets returned
 *   CLOSED                  after close() (on "stop" on stdin, or stdin EOF)
 *
 * Usage: GroupMember BOOTSTRAP GROUP TOPIC CLIENT_ID MAX_SECONDS [ASSIGNOR_CLASS]
 * (no ASSIGNOR_CLASS: the client's default list, range then cooperative-sticky).
 * ASSIGNED always lists the whole assignment, also with a cooperative assignor,
 * whose callback gets only the added partitions.
 */
public final class GroupMember {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], group = args[1], topic = args[2], clientId = args[3];
        long maxSeconds = Long.parseLong(args[4]);
        Properties p = consumerProps(bootstrap, group);
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, clientId);
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        // The client default session timeout is 45 s; an application that wants a
        // dead member replaced sooner lowers it (Kafka's minimum: 6 s).
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "6000");
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
        if (args.length > 5) p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, args[5]);

        AtomicBoolean stop = new AtomicBoolean();
        KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p);
        Thread stdin = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(System.in))) {
                String line;
                while ((line = r.readLine()) != null && !line.trim().equals("stop")) { }
            } catch (Exception e) { }
            stop.set(true);
            c.wakeup();
        }, "stdin");
        stdin.setDaemon(true);
        stdin.start();

        c.subscribe(List.of(topic), new ConsumerRebalanceListener() {
            public void onPartitionsRevoked(Collection<TopicPartition> parts) {
                out("REVOKED " + list(parts));
            }

            public void onPartitionsAssigned(Collection<TopicPartition> parts) {
                out("ASSIGNED " + list(c.assignment()) + " added " + list(parts));
            }

            public void onPartitionsLost(Collection<TopicPartition> parts) {
                out("LOST " + list(parts));
            }
        });
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(maxSeconds);
        try {
            while (!stop.get() && System.nanoTime() < deadline) {
                ConsumerRecords<byte[], byte[]> recs;
                try {
                    recs = c.poll(Duration.ofMillis(200));
                } catch (org.apache.kafka.common.errors.WakeupException e) {
                    break;
                }
                if (recs.isEmpty()) continue;
                Map<TopicPartition, OffsetAndMetadata> next = new HashMap<>();
                StringBuilder sb = new StringBuilder();
                for (ConsumerRecord<byte[], byte[]> r : recs) {
                    int i = keyIndex(r.key());
                    check(Arrays.equals(payload(i), r.value()), "bad value at " + r.partition() + "/" + r.offset());
                    sb.append("REC ").append(r.partition()).append(' ').append(r.offset()).append(' ').append(i).append('\n');
                    next.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                }
                System.out.print(sb);
                System.out.flush();
                try {
                    c.commitSync(next);
                } catch (org.apache.kafka.common.errors.WakeupException e) {
                    c.commitSync(next);
                    stop.set(true);
                } catch (org.apache.kafka.clients.consumer.CommitFailedException
                         | org.apache.kafka.common.errors.RebalanceInProgressException e) {
                    out("COMMITFAILED " + causeChain(e));
                    continue;
                }
                StringBuilder cs = new StringBuilder("COMMITTED");
                String sep = " ";
                for (Map.Entry<TopicPartition, OffsetAndMetadata> e : next.entrySet()) {
                    cs.append(sep).append(e.getKey().partition()).append(':').append(e.getValue().offset());
                    sep = ",";
                }
                out(cs.toString());
            }
        } finally {
            c.close();
        }
        out("CLOSED");
    }

    static String list(Collection<TopicPartition> parts) {
        TreeSet<Integer> s = new TreeSet<>();
        for (TopicPartition tp : parts) s.add(tp.partition());
        StringBuilder sb = new StringBuilder();
        for (int q : s) sb.append(sb.length() == 0 ? "" : ",").append(q);
        return sb.length() == 0 ? "-" : sb.toString();
    }
}
