// Sarama (Debian's golang-github-shopify-sarama-dev, 1.22) against the
// broker, as a Go service would use it. Each check is a subcommand; it
// prints what it saw and exits non-zero with the reason when the broker's
// answer is not what Apache Kafka gives.
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o sarama-check .
//	sarama-check -bootstrap 127.0.0.1:9092 -check admin
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	"github.com/Shopify/sarama"
)

var (
	bootstrap = flag.String("bootstrap", "127.0.0.1:9092", "broker address")
	check     = flag.String("check", "", "metadata | admin | codecs | group | group-admin | idempotent")
	topic     = flag.String("topic", "sarama", "topic the check uses (created by it)")
	version   = flag.String("kafka-version", "2.1.0", "the Kafka release Sarama is told it talks to (its protocol versions follow)")
)

func main() {
	flag.Parse()
	checks := map[string]func() error{
		"metadata":    checkMetadata,
		"admin":       checkAdmin,
		"codecs":      checkCodecs,
		"group":       checkGroup,
		"group-admin": checkGroupAdmin,
		"idempotent":  checkIdempotent,
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

// config is what a service sets: by default the newest protocol version
// this Sarama knows; -kafka-version 0.8.2.0 is Sarama 1.22's own default
// (Produce v0 with messages of magic 0, Fetch v0).
func config() *sarama.Config {
	c := sarama.NewConfig()
	v, err := sarama.ParseKafkaVersion(*version)
	if err != nil {
		fail("-kafka-version: %v", err)
	}
	c.Version = v
	c.ClientID = "sarama-check"
	c.Metadata.Retry.Backoff = 100 * time.Millisecond
	c.Producer.Return.Successes = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Consumer.Return.Errors = true
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Admin.Timeout = 10 * time.Second
	secure(c)
	return c
}

func createTopic(admin sarama.ClusterAdmin, name string, partitions int32) error {
	err := admin.CreateTopic(name, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false)
	if err != nil {
		return fmt.Errorf("CreateTopic %s: %v", name, err)
	}
	return nil
}

func checkMetadata() error {
	client, err := sarama.NewClient([]string{*bootstrap}, config())
	if err != nil {
		return err
	}
	defer client.Close()
	brokers := client.Brokers()
	if len(brokers) != 1 {
		return fmt.Errorf("%d brokers, want 1", len(brokers))
	}
	fmt.Printf("broker %d at %s\n", brokers[0].ID(), brokers[0].Addr())
	controller, err := client.Controller()
	if err != nil {
		return fmt.Errorf("Controller: %v", err)
	}
	if controller.ID() != brokers[0].ID() {
		return fmt.Errorf("controller %d, want %d", controller.ID(), brokers[0].ID())
	}
	admin, err := sarama.NewClusterAdmin([]string{*bootstrap}, config())
	if err != nil {
		return err
	}
	defer admin.Close()
	described, controllerID, err := admin.DescribeCluster()
	if err != nil {
		return fmt.Errorf("DescribeCluster: %v", err)
	}
	// Sarama 1.22 asks with Metadata v0, which carries no controller:
	// it reports -1 then, against Apache Kafka too.
	fmt.Printf("DescribeCluster: %d brokers, controller %d\n", len(described), controllerID)
	if len(described) != 1 {
		return fmt.Errorf("DescribeCluster: %d brokers, want 1", len(described))
	}
	if err := createTopic(admin, *topic, 3); err != nil {
		return err
	}
	if err := client.RefreshMetadata(*topic); err != nil {
		return fmt.Errorf("RefreshMetadata: %v", err)
	}
	partitions, err := client.Partitions(*topic)
	if err != nil {
		return fmt.Errorf("Partitions: %v", err)
	}
	if len(partitions) != 3 {
		return fmt.Errorf("%d partitions, want 3", len(partitions))
	}
	for _, p := range partitions {
		leader, err := client.Leader(*topic, p)
		if err != nil {
			return fmt.Errorf("Leader of %d: %v", p, err)
		}
		if leader.ID() != brokers[0].ID() {
			return fmt.Errorf("leader of %d is %d", p, leader.ID())
		}
	}
	oldest, err := client.GetOffset(*topic, 0, sarama.OffsetOldest)
	if err != nil {
		return fmt.Errorf("GetOffset oldest: %v", err)
	}
	newest, err := client.GetOffset(*topic, 0, sarama.OffsetNewest)
	if err != nil {
		return fmt.Errorf("GetOffset newest: %v", err)
	}
	if oldest != 0 || newest != 0 {
		return fmt.Errorf("offsets of an empty partition: oldest %d newest %d", oldest, newest)
	}
	return nil
}

func checkAdmin() error {
	admin, err := sarama.NewClusterAdmin([]string{*bootstrap}, config())
	if err != nil {
		return err
	}
	defer admin.Close()
	retention := "3600000"
	err = admin.CreateTopic(*topic, &sarama.TopicDetail{
		NumPartitions:     2,
		ReplicationFactor: 1,
		ConfigEntries:     map[string]*string{"retention.ms": &retention},
	}, false)
	if err != nil {
		return fmt.Errorf("CreateTopic: %v", err)
	}
	err = admin.CreateTopic(*topic, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1}, false)
	if err == nil || err.(*sarama.TopicError).Err != sarama.ErrTopicAlreadyExists {
		return fmt.Errorf("CreateTopic again: %v, want TOPIC_ALREADY_EXISTS", err)
	}
	topics, err := admin.ListTopics()
	if err != nil {
		return fmt.Errorf("ListTopics: %v", err)
	}
	if detail, ok := topics[*topic]; !ok || detail.NumPartitions != 2 {
		return fmt.Errorf("ListTopics: %v", topics)
	}
	described, err := admin.DescribeTopics([]string{*topic})
	if err != nil {
		return fmt.Errorf("DescribeTopics: %v", err)
	}
	if len(described) != 1 || described[0].Err != sarama.ErrNoError || len(described[0].Partitions) != 2 {
		return fmt.Errorf("DescribeTopics: %+v", described)
	}
	value, err := topicConfig(admin, "retention.ms")
	if err != nil {
		return err
	}
	if value != retention {
		return fmt.Errorf("retention.ms %q, want %q", value, retention)
	}
	changed := "7200000"
	err = admin.AlterConfig(sarama.TopicResource, *topic, map[string]*string{"retention.ms": &changed}, false)
	if err != nil {
		return fmt.Errorf("AlterConfig: %v", err)
	}
	if value, err = topicConfig(admin, "retention.ms"); err != nil {
		return err
	}
	if value != changed {
		return fmt.Errorf("retention.ms after AlterConfig %q, want %q", value, changed)
	}
	if err := admin.CreatePartitions(*topic, 4, nil, false); err != nil {
		return fmt.Errorf("CreatePartitions: %v", err)
	}
	if err := admin.DeleteTopic(*topic); err != nil {
		return fmt.Errorf("DeleteTopic: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		topics, err = admin.ListTopics()
		if err != nil {
			return fmt.Errorf("ListTopics after DeleteTopic: %v", err)
		}
		if _, ok := topics[*topic]; !ok {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still listed 10 s after DeleteTopic", *topic)
		}
		time.Sleep(100 * time.Millisecond)
	}
	err = admin.DeleteTopic(*topic)
	if err == nil || err != sarama.ErrUnknownTopicOrPartition {
		return fmt.Errorf("DeleteTopic again: %v, want UNKNOWN_TOPIC_OR_PARTITION", err)
	}
	return nil
}

func topicConfig(admin sarama.ClusterAdmin, name string) (string, error) {
	entries, err := admin.DescribeConfig(sarama.ConfigResource{
		Type:        sarama.TopicResource,
		Name:        *topic,
		ConfigNames: []string{name},
	})
	if err != nil {
		return "", fmt.Errorf("DescribeConfig: %v", err)
	}
	for _, entry := range entries {
		if entry.Name == name {
			return entry.Value, nil
		}
	}
	return "", fmt.Errorf("DescribeConfig: no %s in %+v", name, entries)
}

// Produces with every codec into its own partition and reads each back.
func checkCodecs() error {
	codecs := []sarama.CompressionCodec{
		sarama.CompressionNone, sarama.CompressionGZIP, sarama.CompressionSnappy,
		sarama.CompressionLZ4, sarama.CompressionZSTD,
	}
	kafkaVersion := config().Version
	switch {
	case !kafkaVersion.IsAtLeast(sarama.V0_10_0_0):
		codecs = codecs[:3] // Sarama refuses LZ4 before 0.10, zstd before 2.1
	case !kafkaVersion.IsAtLeast(sarama.V2_1_0_0):
		codecs = codecs[:4]
	}
	// Record headers exist from message format v2 (Kafka 0.11) on.
	withHeaders := kafkaVersion.IsAtLeast(sarama.V0_11_0_0)
	admin, err := sarama.NewClusterAdmin([]string{*bootstrap}, config())
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := createTopic(admin, *topic, int32(len(codecs))); err != nil {
		return err
	}
	const perCodec = 200
	for i, codec := range codecs {
		c := config()
		c.Producer.Compression = codec
		c.Producer.Partitioner = sarama.NewManualPartitioner
		c.Producer.Flush.Messages = 50
		producer, err := sarama.NewSyncProducer([]string{*bootstrap}, c)
		if err != nil {
			return err
		}
		var messages []*sarama.ProducerMessage
		for n := 0; n < perCodec; n++ {
			message := &sarama.ProducerMessage{
				Topic:     *topic,
				Partition: int32(i),
				Key:       sarama.StringEncoder(fmt.Sprintf("k%d", n)),
				Value:     sarama.StringEncoder(fmt.Sprintf("%v-%d", codec, n)),
			}
			if withHeaders {
				message.Headers = []sarama.RecordHeader{{Key: []byte("h"), Value: []byte(strconv.Itoa(n))}}
			}
			messages = append(messages, message)
		}
		if err := producer.SendMessages(messages); err != nil {
			producer.Close()
			return fmt.Errorf("%v: SendMessages: %v", codec, err)
		}
		producer.Close()
	}
	consumer, err := sarama.NewConsumer([]string{*bootstrap}, config())
	if err != nil {
		return err
	}
	defer consumer.Close()
	for i, codec := range codecs {
		pc, err := consumer.ConsumePartition(*topic, int32(i), sarama.OffsetOldest)
		if err != nil {
			return fmt.Errorf("%v: ConsumePartition: %v", codec, err)
		}
		for n := 0; n < perCodec; n++ {
			select {
			case msg := <-pc.Messages():
				want := fmt.Sprintf("%v-%d", codec, n)
				if msg.Offset != int64(n) || string(msg.Value) != want || string(msg.Key) != fmt.Sprintf("k%d", n) {
					pc.Close()
					return fmt.Errorf("%v: offset %d key %q value %q, want offset %d value %q", codec, msg.Offset, msg.Key, msg.Value, n, want)
				}
				if withHeaders && (len(msg.Headers) != 1 || string(msg.Headers[0].Value) != strconv.Itoa(n)) {
					pc.Close()
					return fmt.Errorf("%v: headers %v at %d", codec, msg.Headers, n)
				}
			case err := <-pc.Errors():
				pc.Close()
				return fmt.Errorf("%v: consume: %v", codec, err)
			case <-time.After(15 * time.Second):
				pc.Close()
				return fmt.Errorf("%v: nothing after offset %d for 15 s", codec, n-1)
			}
		}
		pc.Close()
		fmt.Printf("%v: %d records produced and read back\n", codec, perCodec)
	}
	return nil
}

type handler struct {
	limit    int
	seen     map[int32][]int64
	messages chan struct{}
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *handler) ConsumeClaim(session sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for msg := range claim.Messages() {
		h.seen[msg.Partition] = append(h.seen[msg.Partition], msg.Offset)
		session.MarkMessage(msg, "")
		h.messages <- struct{}{}
	}
	return nil
}

// Consumes half of what was produced in a group, closes (committing), and
// resumes in a new consumer of the same group from the committed offsets.
func checkGroup() error {
	const partitions, perPartition = 2, 50
	admin, err := sarama.NewClusterAdmin([]string{*bootstrap}, config())
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := createTopic(admin, *topic, partitions); err != nil {
		return err
	}
	if err := produce(partitions, 0, perPartition/2); err != nil {
		return err
	}
	group := *topic + "-group"
	first, err := consumeInGroup(group, partitions*perPartition/2)
	if err != nil {
		return fmt.Errorf("first consumer: %v", err)
	}
	// The commits are visible through the offset manager and the admin API.
	if err := expectCommitted(admin, group, partitions, perPartition/2); err != nil {
		return err
	}
	if err := produce(partitions, perPartition/2, perPartition); err != nil {
		return err
	}
	second, err := consumeInGroup(group, partitions*perPartition/2)
	if err != nil {
		return fmt.Errorf("second consumer: %v", err)
	}
	for p := int32(0); p < partitions; p++ {
		all := append(append([]int64{}, first[p]...), second[p]...)
		if len(all) != perPartition {
			return fmt.Errorf("partition %d: %d records consumed in all, want %d (first %v, second %v)", p, len(all), perPartition, first[p], second[p])
		}
		for i, offset := range all {
			if offset != int64(i) {
				return fmt.Errorf("partition %d: offsets %v then %v: not each once in order", p, first[p], second[p])
			}
		}
	}
	return expectCommitted(admin, group, partitions, perPartition)
}

func produce(partitions int32, from, to int) error {
	c := config()
	c.Producer.Partitioner = sarama.NewManualPartitioner
	producer, err := sarama.NewSyncProducer([]string{*bootstrap}, c)
	if err != nil {
		return err
	}
	defer producer.Close()
	for p := int32(0); p < partitions; p++ {
		for n := from; n < to; n++ {
			_, offset, err := producer.SendMessage(&sarama.ProducerMessage{
				Topic: *topic, Partition: p, Value: sarama.StringEncoder(strconv.Itoa(n)),
			})
			if err != nil {
				return fmt.Errorf("SendMessage: %v", err)
			}
			if offset != int64(n) {
				return fmt.Errorf("SendMessage: offset %d, want %d", offset, n)
			}
		}
	}
	return nil
}

func consumeInGroup(group string, count int) (map[int32][]int64, error) {
	c := config()
	c.Consumer.Offsets.CommitInterval = 100 * time.Millisecond
	consumer, err := sarama.NewConsumerGroup([]string{*bootstrap}, group, c)
	if err != nil {
		return nil, err
	}
	h := &handler{seen: map[int32][]int64{}, messages: make(chan struct{}, count*2)}
	done := make(chan error, 1)
	go func() {
		done <- consumer.Consume(contextWithCancel(), []string{*topic}, h)
	}()
	deadline := time.After(30 * time.Second)
	for received := 0; received < count; {
		select {
		case <-h.messages:
			received++
		case err := <-consumer.Errors():
			consumer.Close()
			return nil, fmt.Errorf("group: %v", err)
		case err := <-done:
			consumer.Close()
			return nil, fmt.Errorf("Consume ended after %d of %d records: %v", received, count, err)
		case <-deadline:
			consumer.Close()
			return nil, fmt.Errorf("%d of %d records after 30 s", received, count)
		}
	}
	// Let a commit interval pass so that the last marks are committed,
	// then leave; Close commits as well.
	time.Sleep(300 * time.Millisecond)
	if err := consumer.Close(); err != nil {
		return nil, fmt.Errorf("Close: %v", err)
	}
	select {
	case extra := <-h.messages:
		_ = extra
		return nil, fmt.Errorf("more than %d records", count)
	default:
	}
	return h.seen, nil
}

func expectCommitted(admin sarama.ClusterAdmin, group string, partitions int32, want int64) error {
	ps := make([]int32, partitions)
	for p := range ps {
		ps[p] = int32(p)
	}
	fetched, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{*topic: ps})
	if err != nil {
		return fmt.Errorf("ListConsumerGroupOffsets: %v", err)
	}
	for _, p := range ps {
		block := fetched.GetBlock(*topic, p)
		if block == nil || block.Err != sarama.ErrNoError || block.Offset != want {
			return fmt.Errorf("ListConsumerGroupOffsets: partition %d: %+v, want offset %d", p, block, want)
		}
	}
	// And through the offset manager, as a consumer resuming reads them.
	client, err := sarama.NewClient([]string{*bootstrap}, config())
	if err != nil {
		return err
	}
	defer client.Close()
	manager, err := sarama.NewOffsetManagerFromClient(group, client)
	if err != nil {
		return err
	}
	defer manager.Close()
	for _, p := range ps {
		pom, err := manager.ManagePartition(*topic, p)
		if err != nil {
			return fmt.Errorf("ManagePartition %d: %v", p, err)
		}
		offset, _ := pom.NextOffset()
		pom.Close()
		if offset != want {
			return fmt.Errorf("offset manager: partition %d next offset %d, want %d", p, offset, want)
		}
	}
	fmt.Printf("committed offsets of %s: %d on each of %d partitions\n", group, want, partitions)
	return nil
}

func checkGroupAdmin() error {
	admin, err := sarama.NewClusterAdmin([]string{*bootstrap}, config())
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := createTopic(admin, *topic, 1); err != nil {
		return err
	}
	if err := produce(1, 0, 10); err != nil {
		return err
	}
	group := *topic + "-group"
	c := config()
	consumer, err := sarama.NewConsumerGroup([]string{*bootstrap}, group, c)
	if err != nil {
		return err
	}
	defer consumer.Close()
	h := &handler{seen: map[int32][]int64{}, messages: make(chan struct{}, 100)}
	go consumer.Consume(contextWithCancel(), []string{*topic}, h)
	select {
	case <-h.messages:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("the group consumed nothing in 30 s")
	}
	groups, err := admin.ListConsumerGroups()
	if err != nil {
		return fmt.Errorf("ListConsumerGroups: %v", err)
	}
	if groups[group] != "consumer" {
		return fmt.Errorf("ListConsumerGroups: %v, want %s with protocol type consumer", groups, group)
	}
	described, err := admin.DescribeConsumerGroups([]string{group})
	if err != nil {
		return fmt.Errorf("DescribeConsumerGroups: %v", err)
	}
	if len(described) != 1 || described[0].State != "Stable" || len(described[0].Members) != 1 {
		return fmt.Errorf("DescribeConsumerGroups: %+v", described)
	}
	for id, member := range described[0].Members {
		assignment, err := member.GetMemberAssignment()
		if err != nil {
			return fmt.Errorf("member %s assignment: %v", id, err)
		}
		if got := assignment.Topics[*topic]; len(got) != 1 || got[0] != 0 {
			return fmt.Errorf("member %s assigned %v", id, assignment.Topics)
		}
		fmt.Printf("member %s (%s, %s) has %v\n", id, member.ClientId, member.ClientHost, assignment.Topics)
	}
	names := make([]string, 0, len(groups))
	for name := range groups {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Printf("groups: %v\n", names)
	return nil
}

// An idempotent producer (InitProducerId, sequence numbers per partition):
// every record is acknowledged once, at consecutive offsets, and read back
// in order.
func checkIdempotent() error {
	admin, err := sarama.NewClusterAdmin([]string{*bootstrap}, config())
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := createTopic(admin, *topic, 1); err != nil {
		return err
	}
	c := config()
	c.Producer.Idempotent = true
	c.Net.MaxOpenRequests = 1
	c.Producer.Retry.Max = 5
	producer, err := sarama.NewSyncProducer([]string{*bootstrap}, c)
	if err != nil {
		return fmt.Errorf("NewSyncProducer: %v", err)
	}
	defer producer.Close()
	const count = 500
	for n := 0; n < count; n++ {
		_, offset, err := producer.SendMessage(&sarama.ProducerMessage{
			Topic: *topic, Value: sarama.StringEncoder(strconv.Itoa(n)),
		})
		if err != nil {
			return fmt.Errorf("SendMessage %d: %v", n, err)
		}
		if offset != int64(n) {
			return fmt.Errorf("SendMessage %d: offset %d", n, offset)
		}
	}
	consumer, err := sarama.NewConsumer([]string{*bootstrap}, config())
	if err != nil {
		return err
	}
	defer consumer.Close()
	partition, err := consumer.ConsumePartition(*topic, 0, sarama.OffsetOldest)
	if err != nil {
		return err
	}
	defer partition.Close()
	timeout := time.After(30 * time.Second)
	for n := 0; n < count; n++ {
		select {
		case message := <-partition.Messages():
			if string(message.Value) != strconv.Itoa(n) || message.Offset != int64(n) {
				return fmt.Errorf("read %q at offset %d, want %d", message.Value, message.Offset, n)
			}
		case err := <-partition.Errors():
			return err
		case <-timeout:
			return fmt.Errorf("read %d of %d records in 30 s", n, count)
		}
	}
	fmt.Printf("idempotent producer: %d records written once each, in order\n", count)
	return nil
}
