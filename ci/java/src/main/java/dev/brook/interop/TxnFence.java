package dev.brook.interop;

import static dev.brook.interop.Common.*;

import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;

/**
 * Zombie fencing with two KafkaProducers sharing one transactional.id, in two
 * scenarios. Each time the first instance (the zombie) begins a transaction
 * and writes z0..z2 (acknowledged) to its partition, then the second instance
 * calls initTransactions, which must abort the zombie's transaction; the second
 * then writes n0..n2 there and commits.
 *
 *   send:   the zombie sends z3, then tries commitTransaction, then abortTransaction
 *           (TXN_ID + "-send", partition 0)
 *   commit: the zombie calls commitTransaction at once (TXN_ID + "-commit", partition 1)
 *
 * Usage: TxnFence BOOTSTRAP TOPIC TXN_ID   (TOPIC has at least 2 partitions)
 * Prints per scenario S, in order:
 *   S ZOMBIE_WROTE
 *   S NEW_READY
 *   S ZOMBIE_SEND OK|<exception class> <cause chain>      (send only)
 *   S ZOMBIE_COMMIT OK|<exception class> <cause chain>
 *   S ZOMBIE_ABORT OK|<exception class> <cause chain>     (send only)
 *   S NEW_COMMIT OK
 */
public final class TxnFence {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1], txnId = args[2];
        scenario("send", bootstrap, topic, 0, txnId + "-send");
        scenario("commit", bootstrap, topic, 1, txnId + "-commit");
    }

    static void scenario(String s, String bootstrap, String topic, int partition, String txnId) throws Exception {
        Properties pp = producerProps(bootstrap);
        pp.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
        pp.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        try (KafkaProducer<byte[], byte[]> zombie = producer(pp); KafkaProducer<byte[], byte[]> fresh = producer(pp)) {
            zombie.initTransactions();
            zombie.beginTransaction();
            for (int i = 0; i < 3; i++)
                zombie.send(new ProducerRecord<>(topic, partition, bytes("z" + i), bytes("zombie-" + i)))
                        .get(30, TimeUnit.SECONDS);
            out(s + " ZOMBIE_WROTE");

            fresh.initTransactions();
            out(s + " NEW_READY");

            if (s.equals("send")) {
                out(s + " ZOMBIE_SEND " + outcome(() -> zombie.send(
                        new ProducerRecord<>(topic, partition, bytes("z3"), bytes("zombie-3"))).get(30, TimeUnit.SECONDS)));
            }
            out(s + " ZOMBIE_COMMIT " + outcome(zombie::commitTransaction));
            if (s.equals("send")) out(s + " ZOMBIE_ABORT " + outcome(zombie::abortTransaction));

            fresh.beginTransaction();
            for (int i = 0; i < 3; i++)
                fresh.send(new ProducerRecord<>(topic, partition, bytes("n" + i), bytes("new-" + i)));
            fresh.commitTransaction();
            out(s + " NEW_COMMIT OK");
            zombie.close(Duration.ofSeconds(5));
        }
    }

    interface Call {
        void run() throws Exception;
    }

    static String outcome(Call c) {
        try {
            c.run();
            return "OK";
        } catch (Exception e) {
            Throwable t = unwrap(e);
            return t.getClass().getName() + " " + causeChain(t);
        }
    }
}
