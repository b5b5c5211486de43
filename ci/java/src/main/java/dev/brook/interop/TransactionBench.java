package dev.brook.interop;

import java.util.Properties;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The throughput cost of transactions: one producer sends RECORDS records of
 * SIZE bytes to TOPIC, either idempotent without transactions (TXN_SIZE 0) or
 * in transactions of TXN_SIZE records (begin, send, commit; the commit waits for
 * every send and for the coordinator's PrepareCommit), closed loop.
 *
 * Usage: TransactionBench BOOTSTRAP TOPIC RECORDS SIZE TXN_SIZE
 * Prints one line: "RESULT records=N seconds=S records_per_s=R mb_per_s=M
 * transactions=T commit_ms_avg=A".
 */
public final class TransactionBench {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args[1];
        long records = Long.parseLong(args[2]);
        int size = Integer.parseInt(args[3]);
        int txnSize = Integer.parseInt(args[4]);
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.BATCH_SIZE_CONFIG, "262144");
        p.put(ProducerConfig.BUFFER_MEMORY_CONFIG, String.valueOf(256L << 20));
        if (txnSize > 0) p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, "bench-" + topic + "-" + txnSize);
        byte[] value = new byte[size];
        for (int i = 0; i < size; i++) value[i] = (byte) ('a' + i % 26);
        AtomicReference<Exception> failed = new AtomicReference<>();
        long transactions = 0;
        long commitNanos = 0;
        try (KafkaProducer<byte[], byte[]> prod = new KafkaProducer<>(p)) {
            if (txnSize > 0) prod.initTransactions();
            long t0 = System.nanoTime();
            long sent = 0;
            while (sent < records && failed.get() == null) {
                long n = txnSize > 0 ? Math.min(txnSize, records - sent) : records - sent;
                if (txnSize > 0) prod.beginTransaction();
                for (long i = 0; i < n; i++) {
                    prod.send(new ProducerRecord<>(topic, null, value), (md, e) -> {
                        if (e != null) failed.compareAndSet(null, e);
                    });
                }
                sent += n;
                if (txnSize > 0) {
                    long c0 = System.nanoTime();
                    prod.commitTransaction();
                    commitNanos += System.nanoTime() - c0;
                    transactions++;
                } else {
                    prod.flush();
                }
            }
            double secs = (System.nanoTime() - t0) / 1e9;
            if (failed.get() != null) throw failed.get();
            System.out.printf("RESULT records=%d seconds=%.3f records_per_s=%.0f mb_per_s=%.1f transactions=%d commit_ms_avg=%.2f%n",
                    sent, secs, sent / secs, sent * (double) size / secs / 1e6, transactions,
                    transactions == 0 ? 0.0 : commitNanos / 1e6 / transactions);
        }
    }
}
