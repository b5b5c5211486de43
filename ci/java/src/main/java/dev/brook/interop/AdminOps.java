package dev.brook.interop;

import static dev.brook.interop.Common.*;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.ConsumerGroupListing;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListGroupsOptions;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.admin.TopicListing;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.errors.GroupIdNotFoundException;
import org.apache.kafka.common.errors.GroupNotEmptyException;
import org.apache.kafka.common.errors.InvalidPartitionsException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.errors.UnsupportedVersionException;

/**
 * The AdminClient calls an application or an operator's tool makes, one step at a
 * time: describeCluster, createTopics (and its errors), listTopics,
 * describeTopics, createPartitions, the consumer-group calls around a live
 * classic group (listGroups, listConsumerGroups, describeConsumerGroups,
 * listConsumerGroupOffsets, alterConsumerGroupOffsets, deleteConsumerGroups),
 * deleteTopics.
 *
 * Usage: AdminOps BOOTSTRAP STEP... (cluster topics describe-by-id create-partitions groups
 * delete-topics, or all). Each step creates the topics it needs, named from the
 * environment variable PREFIX plus the step.
 * Prints "STEP name" per completed sub-step, "INFO ..." facts, "RESULT step OK|FAIL why" per
 * step (a failed step does not stop the others), and "PASS" or "FAILED n" at the end.
 */
public final class AdminOps {
    static String bootstrap;
    static String prefix;

    public static void main(String[] args) throws Exception {
        bootstrap = args[0];
        prefix = System.getenv().getOrDefault("PREFIX", "jadmin");
        Set<String> steps = new HashSet<>(List.of(args).subList(1, args.length));
        boolean all = steps.contains("all");
        String[] order = {"cluster", "topics", "describe-by-id", "create-partitions", "groups", "delete-topics"};
        int failed = 0;
        try (Admin admin = admin(bootstrap)) {
            for (String st : order) {
                if (!all && !steps.contains(st)) continue;
                try {
                    switch (st) {
                        case "cluster": cluster(admin); break;
                        case "topics": topics(admin); break;
                        case "describe-by-id": describeById(admin); break;
                        case "create-partitions": createPartitions(admin); break;
                        case "groups": groups(admin); break;
                        case "delete-topics": deleteTopics(admin); break;
                        default: throw new IllegalArgumentException(st);
                    }
                    out("RESULT " + st + " OK");
                } catch (Throwable t) {
                    failed++;
                    t.printStackTrace();
                    out("RESULT " + st + " FAIL " + causeChain(t));
                }
            }
        }
        out(failed == 0 ? "PASS" : "FAILED " + failed);
    }

    static <T> T get(org.apache.kafka.common.KafkaFuture<T> f) throws Exception {
        return f.get(30, TimeUnit.SECONDS);
    }

    /** The exception a future fails with (unwrapped), or an AssertionError if it succeeds. */
    static Throwable failure(org.apache.kafka.common.KafkaFuture<?> f, String what) throws Exception {
        try {
            Object v = f.get(30, TimeUnit.SECONDS);
            throw new AssertionError(what + ": expected an error, got success: " + v);
        } catch (java.util.concurrent.ExecutionException e) {
            return e.getCause();
        }
    }

    static void expect(Class<? extends Throwable> want, Throwable got, String what) {
        check(want.isInstance(got), what + ": expected " + want.getName() + ", got " + causeChain(got));
    }

    static void cluster(Admin admin) throws Exception {
        DescribeClusterResult r = admin.describeCluster();
        Collection<Node> nodes = get(r.nodes());
        checkEq(1, nodes.size(), "describeCluster node count");
        Node n = nodes.iterator().next();
        String[] hp = bootstrap.split(":");
        checkEq(hp[0], n.host(), "node host");
        checkEq(Integer.parseInt(hp[1]), n.port(), "node port");
        Node controller = get(r.controller());
        check(controller != null, "describeCluster controller is null");
        String clusterId = get(r.clusterId());
        check(clusterId != null && !clusterId.isEmpty(), "describeCluster clusterId empty: " + clusterId);
        out("INFO describeCluster node=" + n + " controller=" + controller + " clusterId=" + clusterId);
        step("describeCluster");
    }

    static String topicA() {
        return prefix + "-a";
    }

    static String topicB() {
        return prefix + "-b";
    }

    static void topics(Admin admin) throws Exception {
        String a = topicA(), b = topicB();
        NewTopic nb = new NewTopic(b, 2, (short) 1).configs(Map.of("retention.ms", "3600000"));
        get(admin.createTopics(List.of(new NewTopic(a, 5, (short) 1), nb)).all());
        // numPartitions() per topic is answered by CreateTopics v5+
        var res = admin.createTopics(List.of(new NewTopic(a, 5, (short) 1)));
        expect(TopicExistsException.class, failure(res.all(), "createTopics of an existing topic"), "createTopics existing");
        var bad = admin.createTopics(List.of(new NewTopic(prefix + "-zero", 0, (short) 1)));
        expect(InvalidPartitionsException.class, failure(bad.all(), "createTopics with 0 partitions"), "createTopics 0 partitions");
        // default partitions and replication factor (Optional.empty): the broker's num.partitions
        String d = prefix + "-default";
        var cr = admin.createTopics(List.of(new NewTopic(d, java.util.Optional.empty(), java.util.Optional.empty())));
        get(cr.all());
        out("INFO createTopics default: numPartitions=" + get(cr.numPartitions(d)) + " rf=" + get(cr.replicationFactor(d)));
        step("createTopics");

        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        Set<String> names;
        while (true) {
            names = get(admin.listTopics().names());
            if (names.containsAll(List.of(a, b, d))) break;
            check(System.nanoTime() < deadline, "listTopics lacks the new topics: " + names);
            Thread.sleep(100);
        }
        Map<String, TopicListing> listings = get(admin.listTopics().namesToListings());
        check(!listings.get(a).isInternal(), "topic a listed as internal");
        check(!Uuid.ZERO_UUID.equals(listings.get(a).topicId()), "listTopics: zero topic id for " + a);
        step("listTopics");

        Map<String, TopicDescription> desc = get(admin.describeTopics(List.of(a, b)).allTopicNames());
        checkEq(5, desc.get(a).partitions().size(), "describeTopics partitions of a");
        checkEq(2, desc.get(b).partitions().size(), "describeTopics partitions of b");
        checkEq(listings.get(a).topicId(), desc.get(a).topicId(), "describeTopics topic id == listTopics topic id");
        for (TopicDescription td : desc.values()) {
            for (int i = 0; i < td.partitions().size(); i++) {
                TopicPartitionInfo pi = td.partitions().get(i);
                checkEq(i, pi.partition(), "partition index");
                check(pi.leader() != null && pi.leader().id() == 1, td.name() + "-" + i + " leader " + pi.leader());
                checkEq(1, pi.replicas().size(), "replicas of " + td.name() + "-" + i);
                checkEq(1, pi.isr().size(), "isr of " + td.name() + "-" + i);
            }
        }
        var unknown = admin.describeTopics(List.of(prefix + "-nope")).allTopicNames();
        expect(UnknownTopicOrPartitionException.class, failure(unknown, "describeTopics of an unknown topic"),
                "describeTopics unknown");
        step("describeTopics");
    }

    /** describeTopics(TopicCollection.ofTopicIds(...)): needs Metadata v12+ (Kafka 3.1) or DescribeTopicPartitions. */
    static void describeById(Admin admin) throws Exception {
        String b = prefix + "-byid";
        createTopic(admin, b, 2);
        Uuid id = get(admin.listTopics().namesToListings()).get(b).topicId();
        check(!Uuid.ZERO_UUID.equals(id), "listTopics: zero topic id for " + b);
        Map<String, TopicDescription> desc = Map.of(b, get(admin.describeTopics(List.of(b)).allTopicNames()).get(b));
        // by topic id
        Map<Uuid, TopicDescription> byId = get(admin.describeTopics(
                org.apache.kafka.common.TopicCollection.ofTopicIds(List.of(desc.get(b).topicId()))).allTopicIds());
        checkEq(b, byId.get(desc.get(b).topicId()).name(), "describeTopics by id");
        checkEq(2, byId.get(id).partitions().size(), "describeTopics by id: partitions");
        step("describeTopics-by-id");
    }

    /** createPartitions: if the broker lists CreatePartitions, Kafka's semantics (grow,
     * errors for not-growing and unknown topics, validateOnly, the new partitions
     * usable); if it does not, the call must fail at once with UnsupportedVersionException. */
    static void createPartitions(Admin admin) throws Exception {
        String a = prefix + "-cp";
        createTopic(admin, a, 5);
        long t0 = System.nanoTime();
        var f = admin.createPartitions(Map.of(a, NewPartitions.increaseTo(8))).all();
        Throwable e = null;
        try {
            f.get(30, TimeUnit.SECONDS);
        } catch (java.util.concurrent.ExecutionException x) {
            e = x.getCause();
        }
        long ms = (System.nanoTime() - t0) / 1_000_000;
        if (e != null) {
            out("INFO createPartitions failed after " + ms + " ms with " + causeChain(e));
            expect(UnsupportedVersionException.class, e, "createPartitions");
            check(ms < 10_000, "createPartitions took " + ms + " ms to fail");
            checkEq(5, get(admin.describeTopics(List.of(a)).allTopicNames()).get(a).partitions().size(),
                    "partitions after the failed createPartitions");
            step("createPartitions-unsupported");
            return;
        }
        out("INFO createPartitions succeeded after " + ms + " ms");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (get(admin.describeTopics(List.of(a)).allTopicNames()).get(a).partitions().size() != 8) {
            check(System.nanoTime() < deadline, "describeTopics does not show 8 partitions after createPartitions");
            Thread.sleep(100);
        }
        step("createPartitions-grow");
        expect(InvalidPartitionsException.class, failure(admin.createPartitions(Map.of(a, NewPartitions.increaseTo(8))).all(),
                "createPartitions to the current count"), "createPartitions to the current count");
        expect(InvalidPartitionsException.class, failure(admin.createPartitions(Map.of(a, NewPartitions.increaseTo(4))).all(),
                "createPartitions to fewer"), "createPartitions to fewer");
        expect(UnknownTopicOrPartitionException.class, failure(admin.createPartitions(
                Map.of(prefix + "-cp-nope", NewPartitions.increaseTo(4))).all(), "createPartitions of an unknown topic"),
                "createPartitions unknown topic");
        get(admin.createPartitions(Map.of(a, NewPartitions.increaseTo(10)),
                new org.apache.kafka.clients.admin.CreatePartitionsOptions().validateOnly(true)).all());
        checkEq(8, get(admin.describeTopics(List.of(a)).allTopicNames()).get(a).partitions().size(),
                "partitions after a validateOnly createPartitions");
        step("createPartitions-errors");
        // the new partitions take records: one per partition, then read back
        Map<Integer, long[]> acked;
        try (KafkaProducer<byte[], byte[]> prod = producer(producerProps(bootstrap))) {
            acked = produceKeyed(prod, a, 0, 16, i -> i % 8, null);
        }
        Map<Integer, List<ConsumerRecord<byte[], byte[]>>> got = readAll(bootstrap, a, 8, 60_000);
        checkKeyed(got, 0, 16, acked);
        for (int p = 0; p < 8; p++) checkEq(2, got.getOrDefault(p, List.of()).size(), "records in partition " + p);
        step("createPartitions-new-partitions-used");
    }

    @SuppressWarnings("deprecation")
    static void groups(Admin admin) throws Exception {
        String a = prefix + "-grp";
        createTopic(admin, a, 5);
        String g = prefix + "-g";
        int parts = get(admin.describeTopics(List.of(a)).allTopicNames()).get(a).partitions().size();
        List<TopicPartition> tps = new ArrayList<>();
        for (int p = 0; p < parts; p++) tps.add(new TopicPartition(a, p));
        Map<Integer, long[]> acked;
        try (KafkaProducer<byte[], byte[]> prod = producer(producerProps(bootstrap))) {
            acked = produceKeyed(prod, a, 0, 100, i -> i % parts, null);
        }
        Properties cp = consumerProps(bootstrap, g);
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.CLIENT_ID_CONFIG, "java-admin-member");
        KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(cp);
        try {
            c.subscribe(List.of(a));
            Map<Integer, List<ConsumerRecord<byte[], byte[]>>> got = new HashMap<>();
            int n = 0;
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (n < 100) {
                check(System.nanoTime() < deadline, "group member read " + n + " of 100");
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    got.computeIfAbsent(r.partition(), k -> new ArrayList<>()).add(r);
                    n++;
                }
            }
            checkKeyed(got, 0, 100, acked);
            c.commitSync();
            step("group-member-consumed");

            // listGroups / listConsumerGroups while the member is in the group
            Collection<GroupListing> all = get(admin.listGroups().all());
            GroupListing gl = all.stream().filter(x -> x.groupId().equals(g)).findFirst().orElse(null);
            check(gl != null, "listGroups() lacks " + g + ": " + all);
            out("INFO listGroups() " + gl);
            checkEq("consumer", gl.protocol(), "listGroups protocol type");
            check(gl.groupState().isEmpty() || gl.groupState().get() == GroupState.STABLE, "listGroups state " + gl);
            Collection<ConsumerGroupListing> cgl = get(admin.listConsumerGroups().all());
            check(cgl.stream().anyMatch(x -> x.groupId().equals(g)), "listConsumerGroups() lacks " + g + ": " + cgl);
            step("listGroups");
            // as kafka-consumer-groups --list does in 4.x
            Collection<GroupListing> cons = get(admin.listGroups(ListGroupsOptions.forConsumerGroups()).all());
            check(cons.stream().anyMatch(x -> x.groupId().equals(g)), "listGroups(forConsumerGroups()) lacks " + g + ": " + cons);
            step("listGroups-forConsumerGroups");
            Collection<GroupListing> stable = get(admin.listGroups(
                    ListGroupsOptions.forConsumerGroups().inGroupStates(Set.of(GroupState.STABLE))).all());
            check(stable.stream().anyMatch(x -> x.groupId().equals(g)), "listGroups(Stable) lacks " + g + ": " + stable);
            step("listGroups-inGroupStates");

            ConsumerGroupDescription d = get(admin.describeConsumerGroups(List.of(g)).all()).get(g);
            out("INFO describeConsumerGroups " + d);
            checkEq(GroupState.STABLE, d.groupState(), "group state");
            checkEq(1, d.members().size(), "members");
            MemberDescription m = d.members().iterator().next();
            checkEq("java-admin-member", m.clientId(), "member client id");
            checkEq(Set.copyOf(tps), m.assignment().topicPartitions(), "member assignment");
            checkEq("range", d.partitionAssignor(), "assignor");
            check(!d.isSimpleConsumerGroup(), "a subscribing group described as simple");
            check(d.coordinator() != null && d.coordinator().id() == 1, "coordinator " + d.coordinator());
            step("describeConsumerGroups-stable");

            Map<TopicPartition, OffsetAndMetadata> off = get(admin.listConsumerGroupOffsets(g).partitionsToOffsetAndMetadata());
            for (TopicPartition tp : tps) checkEq(100L / parts, off.get(tp).offset(), "listConsumerGroupOffsets " + tp);
            step("listConsumerGroupOffsets");

            var del = admin.deleteConsumerGroups(List.of(g)).all();
            expect(GroupNotEmptyException.class, failure(del, "deleteConsumerGroups of a live group"), "deleteConsumerGroups live");
            step("deleteConsumerGroups-nonempty");
        } finally {
            c.close();
        }

        ConsumerGroupDescription d = get(admin.describeConsumerGroups(List.of(g)).all()).get(g);
        checkEq(GroupState.EMPTY, d.groupState(), "group state after close");
        check(d.members().isEmpty(), "members after close: " + d.members());
        step("describeConsumerGroups-empty");

        Map<TopicPartition, OffsetAndMetadata> alter = Map.of(tps.get(0), new OffsetAndMetadata(3, "altered"),
                tps.get(1), new OffsetAndMetadata(7));
        get(admin.alterConsumerGroupOffsets(g, alter).all());
        Map<TopicPartition, OffsetAndMetadata> off = get(admin.listConsumerGroupOffsets(g).partitionsToOffsetAndMetadata());
        checkEq(3L, off.get(tps.get(0)).offset(), "offset 0 after alter");
        checkEq("altered", off.get(tps.get(0)).metadata(), "metadata 0 after alter");
        checkEq(7L, off.get(tps.get(1)).offset(), "offset 1 after alter");
        for (TopicPartition tp : tps.subList(2, tps.size())) checkEq(100L / parts, off.get(tp).offset(), "untouched " + tp);
        step("alterConsumerGroupOffsets");

        // a new member resumes where alterConsumerGroupOffsets put the group
        Properties cp2 = consumerProps(bootstrap, g);
        cp2.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        try (KafkaConsumer<byte[], byte[]> c2 = new KafkaConsumer<>(cp2)) {
            c2.subscribe(List.of(a));
            Map<Integer, List<ConsumerRecord<byte[], byte[]>>> got = new HashMap<>();
            int want = (int) (100 / parts - 3 + 100 / parts - 7);
            int n = 0;
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (n < want) {
                check(System.nanoTime() < deadline, "member after alter read " + n + " of " + want);
                for (ConsumerRecord<byte[], byte[]> r : c2.poll(Duration.ofMillis(200))) {
                    got.computeIfAbsent(r.partition(), k -> new ArrayList<>()).add(r);
                    n++;
                }
            }
            checkEq(Set.of(0, 1), got.keySet(), "partitions re-read after alter");
            checkEq(3L, got.get(0).get(0).offset(), "first offset re-read on 0");
            checkEq(7L, got.get(1).get(0).offset(), "first offset re-read on 1");
            checkEq(want, n, "records re-read after alter");
        }
        step("resume-after-alter");

        get(admin.deleteConsumerGroups(List.of(g)).all());
        Map<TopicPartition, OffsetAndMetadata> gone = get(admin.listConsumerGroupOffsets(g).partitionsToOffsetAndMetadata());
        check(gone.isEmpty(), "offsets after deleteConsumerGroups: " + gone);
        Collection<GroupListing> after = get(admin.listGroups().all());
        check(after.stream().noneMatch(x -> x.groupId().equals(g)), "listGroups after delete still has " + g);
        var again = admin.deleteConsumerGroups(List.of(g)).all();
        expect(GroupIdNotFoundException.class, failure(again, "deleteConsumerGroups of a deleted group"), "deleteConsumerGroups again");
        step("deleteConsumerGroups");
    }

    static void deleteTopics(Admin admin) throws Exception {
        String a = prefix + "-del-a", b = prefix + "-del-b", d = prefix + "-del-c";
        createTopic(admin, a, 5);
        createTopic(admin, b, 1);
        createTopic(admin, d, 2);
        get(admin.deleteTopics(List.of(a, b, d)).all());
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (true) {
            Set<String> names = get(admin.listTopics().names());
            if (!names.contains(a) && !names.contains(b) && !names.contains(d)) break;
            check(System.nanoTime() < deadline, "topics still listed after deleteTopics: " + names);
            Thread.sleep(100);
        }
        expect(UnknownTopicOrPartitionException.class, failure(admin.describeTopics(List.of(a)).allTopicNames(),
                "describeTopics after delete"), "describeTopics after delete");
        expect(UnknownTopicOrPartitionException.class, failure(admin.deleteTopics(List.of(a)).all(),
                "deleteTopics of a deleted topic"), "deleteTopics unknown");
        step("deleteTopics");
    }
}
