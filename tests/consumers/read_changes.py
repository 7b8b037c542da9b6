#!/usr/bin/env python3
"""An independent consumer of clickflow's change topics (confluent-kafka, not librdkafka's
Rust binding), as a downstream service would read them.

    read_changes.py BROKERS TOPIC [TOPIC ...]

Reads every partition of each topic from the beginning to its end and prints one JSON object:
per topic, the rows a consumer holds after applying the changes (dropping repeats: a change
whose source.seq is not above the last one applied for its key), the rows a compacted topic
keeps (the last message per key; a tombstone removes the key), how many messages and repeats
it saw, and every key whose changes went backwards in epoch after repeats were dropped.
"""
import json
import sys

from confluent_kafka import Consumer, TopicPartition


IDLE_SECONDS = 3


def read_topics(brokers, topics):
    """Every message of every partition of `topics`, from the beginning until none came for
    IDLE_SECONDS (the producer has finished). End offsets are not used: tansu 0.6 answers
    the "latest" ListOffsets request wrongly."""
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": "clickflow-feed-check",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    assignment = []
    for topic in topics:
        metadata = consumer.list_topics(topic, timeout=30)
        if metadata.topics[topic].error is not None:
            raise SystemExit(f"{topic}: {metadata.topics[topic].error}")
        assignment += [TopicPartition(topic, p, 0) for p in sorted(metadata.topics[topic].partitions)]
    consumer.assign(assignment)
    states = {topic: Feed() for topic in topics}
    while True:
        message = consumer.poll(IDLE_SECONDS)
        if message is None:
            break
        if message.error():
            raise SystemExit(f"{message.topic()}: {message.error()}")
        states[message.topic()].apply(message)
    consumer.close()
    return {topic: state.summary() for topic, state in states.items()}


class Feed:
    """One topic as a consumer applies it (messages of a partition arrive in offset order;
    a key lives in one partition)."""

    def __init__(self):
        self.applied, self.compacted, self.last_seq, self.last_epoch = {}, {}, {}, {}
        self.messages = self.repeats = 0
        self.backwards = []

    def apply(self, message):
        self.messages += 1
        key = message.key().decode()
        value = message.value()
        if value is None:
            self.compacted.pop(key, None)
            return
        change = json.loads(value)
        self.compacted[key] = change["after"]
        if self.compacted[key] is None:
            self.compacted.pop(key)
        seq, epoch = change["source"]["seq"], change["source"]["epoch"]
        if seq <= self.last_seq.get(key, 0):
            self.repeats += 1
            return
        if epoch < self.last_epoch.get(key, 0):
            self.backwards.append({"key": key, "epoch": epoch, "after": self.last_epoch[key]})
        self.last_seq[key], self.last_epoch[key] = seq, epoch
        if change["op"] == "d":
            self.applied.pop(key, None)
        else:
            self.applied[key] = change["after"]

    def summary(self):
        return {
            "applied": self.applied,
            "compacted": self.compacted,
            "messages": self.messages,
            "repeats": self.repeats,
            "backwards": self.backwards,
        }


def main():
    brokers, topics = sys.argv[1], sys.argv[2:]
    print(json.dumps(read_topics(brokers, topics)))


if __name__ == "__main__":
    main()
