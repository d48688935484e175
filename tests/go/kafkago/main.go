// segmentio/kafka-go (Debian's golang-github-segmentio-kafka-go-dev, 0.2.1)
// against the broker. This kafka-go speaks the protocol of Kafka 0.10/0.11:
// CreateTopics v0, Metadata v1, Produce v2 and Fetch v2 with message sets
// of magic 1, the group APIs at v0-v2. Each check is a subcommand; it
// prints what it saw and exits non-zero with the reason when the broker's
// answer is not what Apache Kafka 3.x gives.
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o kafkago-check .
//	kafkago-check -bootstrap 127.0.0.1:9092 -check produce-consume
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	kafka "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/gzip"
	"github.com/segmentio/kafka-go/lz4"
	"github.com/segmentio/kafka-go/snappy"
)

var (
	bootstrap = flag.String("bootstrap", "127.0.0.1:9092", "broker address")
	check     = flag.String("check", "", "topics | produce-consume | group")
	topic     = flag.String("topic", "kafkago", "topic (prefix) the check creates")
)

func main() {
	flag.Parse()
	checks := map[string]func() error{
		"topics":          checkTopics,
		"produce-consume": checkProduceConsume,
		"group":           checkGroup,
	}
	run, ok := checks[*check]
	if !ok {
		fail("unknown -check %q", *check)
	}
	if err := run(); err != nil {
		fail("%s: %v", *check, err)
	}
	fmt.Printf("%s: ok\n", *check)
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL "+format+"\n", args...)
	os.Exit(1)
}

func createTopic(name string, partitions int) error {
	conn, err := kafka.Dial("tcp", *bootstrap)
	if err != nil {
		return err
	}
	defer conn.Close()
	err = conn.CreateTopics(kafka.TopicConfig{Topic: name, NumPartitions: partitions, ReplicationFactor: 1})
	if err != nil {
		return fmt.Errorf("CreateTopics %s: %v", name, err)
	}
	return nil
}

// CreateTopics v0, Metadata v1 (ReadPartitions), DeleteTopics v1.
func checkTopics() error {
	if err := createTopic(*topic, 3); err != nil {
		return err
	}
	conn, err := kafka.Dial("tcp", *bootstrap)
	if err != nil {
		return err
	}
	defer conn.Close()
	// kafka-go's CreateTopics is idempotent: it takes TOPIC_ALREADY_EXISTS
	// as done.
	if err := conn.CreateTopics(kafka.TopicConfig{Topic: *topic, NumPartitions: 3, ReplicationFactor: 1}); err != nil {
		return fmt.Errorf("CreateTopics again: %v", err)
	}
	partitions, err := conn.ReadPartitions(*topic)
	if err != nil {
		return fmt.Errorf("ReadPartitions: %v", err)
	}
	if len(partitions) != 3 {
		return fmt.Errorf("%d partitions, want 3: %+v", len(partitions), partitions)
	}
	for _, p := range partitions {
		if p.Leader.Port == 0 || len(p.Replicas) != 1 || len(p.Isr) != 1 {
			return fmt.Errorf("partition %+v", p)
		}
	}
	fmt.Printf("%s: %d partitions, leader %s:%d\n", *topic, len(partitions), partitions[0].Leader.Host, partitions[0].Leader.Port)
	if err := conn.DeleteTopics(*topic); err != nil {
		return fmt.Errorf("DeleteTopics: %v", err)
	}
	// (Metadata v1 creates topics it names when auto.create.topics.enable
	// is on, as Kafka does: reading the partitions again would bring it
	// back. A topic never created is refused instead.)
	if err := conn.DeleteTopics(*topic + "-never-created"); err != kafka.UnknownTopicOrPartition {
		return fmt.Errorf("DeleteTopics of an unknown topic: %v, want UnknownTopicOrPartition", err)
	}
	return nil
}

// A Writer per codec (Produce v2, message sets of magic 1, compressed in
// one wrapper per batch), then a Reader (Fetch v2) and a leader connection
// (Conn.ReadBatch) read every message back with its offset and key.
func checkProduceConsume() error {
	codecs := []struct {
		name  string
		codec kafka.CompressionCodec
	}{
		{"none", nil},
		{"gzip", gzip.NewCompressionCodec()},
		{"snappy", snappy.NewCompressionCodec()},
		{"lz4", lz4.NewCompressionCodec()},
	}
	const count = 300
	for _, c := range codecs {
		name := *topic + "-" + c.name
		if err := createTopic(name, 1); err != nil {
			return err
		}
		writer := kafka.NewWriter(kafka.WriterConfig{
			Brokers:          []string{*bootstrap},
			Topic:            name,
			BatchSize:        50,
			BatchTimeout:     10 * time.Millisecond,
			RequiredAcks:     -1,
			CompressionCodec: c.codec,
		})
		var messages []kafka.Message
		for n := 0; n < count; n++ {
			messages = append(messages, kafka.Message{
				Key:   []byte("k" + strconv.Itoa(n)),
				Value: []byte(c.name + "-" + strconv.Itoa(n)),
			})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := writer.WriteMessages(ctx, messages...)
		cancel()
		writer.Close()
		if err != nil {
			return fmt.Errorf("%s: WriteMessages: %v", c.name, err)
		}
		reader := kafka.NewReader(kafka.ReaderConfig{
			Brokers:   []string{*bootstrap},
			Topic:     name,
			Partition: 0,
			MinBytes:  1,
			MaxBytes:  1 << 20,
			MaxWait:   100 * time.Millisecond,
		})
		for n := 0; n < count; n++ {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			msg, err := reader.ReadMessage(ctx)
			cancel()
			if err != nil {
				reader.Close()
				return fmt.Errorf("%s: ReadMessage %d: %v", c.name, n, err)
			}
			want := c.name + "-" + strconv.Itoa(n)
			if msg.Offset != int64(n) || string(msg.Value) != want || string(msg.Key) != "k"+strconv.Itoa(n) {
				reader.Close()
				return fmt.Errorf("%s: offset %d key %q value %q, want offset %d value %q", c.name, msg.Offset, msg.Key, msg.Value, n, want)
			}
			if msg.Time.IsZero() || time.Since(msg.Time) > time.Hour {
				reader.Close()
				return fmt.Errorf("%s: message %d has time %v", c.name, n, msg.Time)
			}
		}
		reader.Close()
		fmt.Printf("%s: %d messages written and read back\n", c.name, count)
	}
	// The last and first offsets through a leader connection (ListOffsets v1).
	conn, err := kafka.DialLeader(context.Background(), "tcp", *bootstrap, *topic+"-none", 0)
	if err != nil {
		return err
	}
	defer conn.Close()
	first, last, err := conn.ReadOffsets()
	if err != nil {
		return fmt.Errorf("ReadOffsets: %v", err)
	}
	if first != 0 || last != count {
		return fmt.Errorf("ReadOffsets: %d..%d, want 0..%d", first, last, count)
	}
	return nil
}

// A group reader consumes and commits half, a second one of the same
// group resumes from the commit.
func checkGroup() error {
	const count = 40
	name := *topic
	if err := createTopic(name, 1); err != nil {
		return err
	}
	writer := kafka.NewWriter(kafka.WriterConfig{Brokers: []string{*bootstrap}, Topic: name, BatchTimeout: 10 * time.Millisecond})
	var messages []kafka.Message
	for n := 0; n < count; n++ {
		messages = append(messages, kafka.Message{Value: []byte(strconv.Itoa(n))})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err := writer.WriteMessages(ctx, messages...)
	cancel()
	writer.Close()
	if err != nil {
		return fmt.Errorf("WriteMessages: %v", err)
	}
	group := name + "-group"
	read := func(n int) ([]int64, error) {
		reader := kafka.NewReader(kafka.ReaderConfig{
			Brokers:           []string{*bootstrap},
			GroupID:           group,
			Topic:             name,
			MinBytes:          1,
			MaxBytes:          1 << 20,
			MaxWait:           100 * time.Millisecond,
			HeartbeatInterval: 500 * time.Millisecond,
			SessionTimeout:    6 * time.Second,
		})
		defer reader.Close()
		var offsets []int64
		for len(offsets) < n {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			msg, err := reader.FetchMessage(ctx)
			if err == nil {
				err = reader.CommitMessages(ctx, msg)
			}
			cancel()
			if err != nil {
				return offsets, fmt.Errorf("after %d messages: %v", len(offsets), err)
			}
			offsets = append(offsets, msg.Offset)
		}
		return offsets, nil
	}
	first, err := read(count / 2)
	if err != nil {
		return fmt.Errorf("first reader: %v", err)
	}
	second, err := read(count / 2)
	if err != nil {
		return fmt.Errorf("second reader: %v", err)
	}
	all := append(first, second...)
	for i, offset := range all {
		if offset != int64(i) {
			return fmt.Errorf("offsets %v then %v: not each once, in order", first, second)
		}
	}
	fmt.Printf("group %s: %d then %d messages, resumed at offset %d\n", group, len(first), len(second), second[0])
	return nil
}
