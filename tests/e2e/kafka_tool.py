"""Tiny Kafka helper for tests/e2e/run.sh, on Debian's python3-kafka (kafka-python).

kcat from Debian (librdkafka 2.0.2) cannot talk to tansu 0.6: it fails to parse
tansu's ApiVersions v3 answer ("Read underflow"). kafka-python can.

  kafka_tool.py produce BROKER TOPIC KEY     value read from standard input
  kafka_tool.py count   BROKER TOPIC         records in the topic (all partitions)
  kafka_tool.py dump    BROKER TOPIC [N]     prints up to N records: key, error header
"""

import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

TIMEOUT_MS = 15_000


def partitions(consumer, topic):
    deadline = 20
    import time

    for _ in range(deadline * 4):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        time.sleep(0.25)
    raise SystemExit(f"topic {topic} has no partitions (does it exist?)")


def consumer(broker):
    return KafkaConsumer(
        bootstrap_servers=broker,
        enable_auto_commit=False,
        consumer_timeout_ms=3_000,
        request_timeout_ms=TIMEOUT_MS + 1_000,
        api_version_auto_timeout_ms=TIMEOUT_MS,
    )


def main(argv):
    cmd, broker, topic = argv[1], argv[2], argv[3]
    if cmd == "produce":
        value = sys.stdin.buffer.read().strip()
        p = KafkaProducer(
            bootstrap_servers=broker,
            acks="all",
            retries=5,
            request_timeout_ms=TIMEOUT_MS,
            api_version_auto_timeout_ms=TIMEOUT_MS,
        )
        md = p.send(topic, key=argv[4].encode(), value=value).get(timeout=TIMEOUT_MS / 1000)
        p.flush(timeout=TIMEOUT_MS / 1000)
        p.close(timeout=5)
        print(f"produced {len(value)} bytes to {md.topic}[{md.partition}] at offset {md.offset}")
    elif cmd == "count":
        c = consumer(broker)
        tps = partitions(c, topic)
        end = c.end_offsets(tps)
        begin = c.beginning_offsets(tps)
        print(sum(end[tp] - begin[tp] for tp in tps))
        c.close()
    elif cmd == "dump":
        limit = int(argv[4]) if len(argv) > 4 else 20
        c = consumer(broker)
        tps = partitions(c, topic)
        c.assign(tps)
        c.seek_to_beginning(*tps)
        for i, m in enumerate(c):
            if i >= limit:
                break
            err = dict(m.headers or []).get("error", b"").decode(errors="replace")
            print(f"{m.partition}/{m.offset} key={m.key!r} error={err}")
        c.close()
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
