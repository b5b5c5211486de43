package dev.brook.interop;

import static dev.brook.interop.Common.*;

import java.time.Duration;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;

/**
 * Features Brook lacks, used as an unmodified application would: each must fail
 * with an exception instead of blocking until a client timeout.
 *
 * Usage: UnsupportedFeatures BOOTSTRAP consumer-protocol TOPIC BOUND_SECONDS
 * Prints "RESULT <exception class|HANG|NO_ERROR> <elapsed ms> <cause chain>".
 * The client-side defaults stay (max.block.ms 60 s, default.api.timeout.ms 60 s);
 * the scenario is abandoned after BOUND_SECONDS and reported as HANG.
 */
public final class UnsupportedFeatures {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String what = args[1];
        String topic = args[2];
        long bound = Long.parseLong(args[3]);
        ExecutorService ex = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "scenario");
            t.setDaemon(true);
            return t;
        });
        long t0 = System.nanoTime();
        Future<?> f = ex.submit(() -> {
            if (what.equals("consumer-protocol")) consumerProtocol(bootstrap, topic);
            else throw new IllegalArgumentException(what);
            return null;
        });
        String result;
        String detail = "";
        try {
            f.get(bound, TimeUnit.SECONDS);
            result = "NO_ERROR";
        } catch (TimeoutException e) {
            result = "HANG";
            StringBuilder st = new StringBuilder();
            for (Thread t : Thread.getAllStackTraces().keySet())
                if (t.getName().equals("scenario"))
                    for (StackTraceElement el : t.getStackTrace()) st.append(" at ").append(el);
            detail = "still blocked after " + bound + "s:" + st;
        } catch (java.util.concurrent.ExecutionException e) {
            Throwable c = e.getCause();
            result = c.getClass().getName();
            detail = causeChain(c);
        }
        long ms = (System.nanoTime() - t0) / 1_000_000;
        out("RESULT " + result + " " + ms + " " + detail);
        // A hung client thread must not keep the JVM (and its sockets) alive.
        Runtime.getRuntime().halt(0);
    }

    /** The KIP-848 consumer: group.protocol=consumer needs ConsumerGroupHeartbeat. */
    static void consumerProtocol(String bootstrap, String topic) {
        Properties p = consumerProps(bootstrap, "brook-java-kip848-" + topic);
        p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p);
        try {
            c.subscribe(List.of(topic));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(300);
            while (System.nanoTime() < deadline) c.poll(Duration.ofMillis(500));
        } finally {
            c.close(org.apache.kafka.clients.consumer.CloseOptions.timeout(Duration.ofSeconds(1)));
        }
    }
}
