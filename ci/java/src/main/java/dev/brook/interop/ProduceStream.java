package dev.brook.interop;

import static dev.brook.interop.Common.*;

import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;

/**
 * A default (idempotent, acks=all) KafkaProducer sending keys k0..k{N-1} at a
 * steady pace, so that the test can kill and restart the broker under it. The
 * producer is left to its own retries (delivery.timeout.ms 120 s).
 *
 * Usage: ProduceStream BOOTSTRAP TOPIC N PER_10MS
 * Prints "PROGRESS sent acked" about every 500 ms, "ACK i partition offset" per
 * acknowledged record, "ERR i exception" per failed one, then "END acked failed".
 */
public final class ProduceStream {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        int n = Integer.parseInt(args[2]), per = Integer.parseInt(args[3]);
        AtomicInteger acked = new AtomicInteger(), failed = new AtomicInteger();
        StringBuffer log = new StringBuffer();
        long lastProgress = System.nanoTime();
        try (KafkaProducer<byte[], byte[]> prod = producer(producerProps(bootstrap))) {
            for (int i = 0; i < n; i++) {
                final int k = i;
                ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(topic, bytes(key(i)), payload(i));
                r.headers().add("i", bytes(Integer.toString(i))).add("src", bytes("java"));
                prod.send(r, (md, e) -> {
                    if (e != null) {
                        failed.incrementAndGet();
                        log.append("ERR ").append(k).append(' ').append(causeChain(e)).append('\n');
                    } else {
                        acked.incrementAndGet();
                        log.append("ACK ").append(k).append(' ').append(md.partition()).append(' ').append(md.offset()).append('\n');
                    }
                });
                if (i % per == per - 1) Thread.sleep(10);
                if (System.nanoTime() - lastProgress > TimeUnit.MILLISECONDS.toNanos(500)) {
                    out("PROGRESS " + (i + 1) + " " + acked.get());
                    lastProgress = System.nanoTime();
                }
            }
            prod.flush();
        }
        System.out.print(log);
        out("END " + acked.get() + " " + failed.get());
    }
}
