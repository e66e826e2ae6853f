package devenv

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// KafkaOptions configures StartKafka.
type KafkaOptions struct {
	// Partitions is the partition count of auto-created topics; 0 means 3.
	Partitions int
	// DataDir, if set, persists the broker's state there, so that Restart
	// keeps topics, records and producer state. Without it a restart
	// comes back empty.
	DataDir string
	// Port is a fixed port to listen on; 0 picks a free one.
	Port int
	// Extra options (SASL, TLS, ...) are applied after ours and can
	// override them.
	Extra []kfake.Opt
}

// Kafka is an embedded single-broker Kafka (kfake) listening on 127.0.0.1.
type Kafka struct {
	opts KafkaOptions
	port int // fixed at start so clients' bootstrap address survives restarts

	mu     sync.Mutex
	c      *kfake.Cluster
	closed bool
}

// restartBindTimeout bounds how long Restart waits for the port to free up.
const restartBindTimeout = 10 * time.Second

// StartKafka starts a one-broker cluster that creates topics on first use.
// kfake binds 127.0.0.1 and advertises the listener's address in metadata,
// so clients outside the process can reach it over TCP.
func StartKafka(opts KafkaOptions) (*Kafka, error) {
	if opts.Partitions <= 0 {
		opts.Partitions = 3
	}
	k := &Kafka{opts: opts}
	c, err := kfake.NewCluster(k.clusterOpts(opts.Port)...)
	if err != nil {
		return nil, fmt.Errorf("starting kafka broker (port %d): %w", opts.Port, err)
	}
	addrs := c.ListenAddrs()
	if len(addrs) != 1 {
		c.Close()
		return nil, fmt.Errorf("starting kafka broker: want 1 listener, got %v", addrs)
	}
	_, port, err := net.SplitHostPort(addrs[0])
	if err == nil {
		k.port, err = strconv.Atoi(port)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("starting kafka broker: parsing listen address %q: %w", addrs[0], err)
	}
	k.c = c
	return k, nil
}

func (k *Kafka) clusterOpts(port int) []kfake.Opt {
	o := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(k.opts.Partitions),
	}
	if port != 0 {
		o = append(o, kfake.Ports(port))
	}
	if k.opts.DataDir != "" {
		o = append(o, kfake.DataDir(k.opts.DataDir))
	}
	return append(o, k.opts.Extra...)
}

// Addr returns the bootstrap address, "127.0.0.1:PORT".
func (k *Kafka) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(k.port)) }

// Cluster returns the current kfake cluster; Restart replaces it.
func (k *Kafka) Cluster() *kfake.Cluster {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.c
}

// Restart closes the broker, dropping every connection, and starts a new
// one on the same port with the same options. State survives only with
// DataDir: kfake saves it on Close and reloads it on start.
func (k *Kafka) Restart() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return errors.New("restarting kafka broker: broker is closed")
	}
	k.c.Close()
	deadline := time.Now().Add(restartBindTimeout)
	for {
		c, err := kfake.NewCluster(k.clusterOpts(k.port)...)
		if err == nil {
			k.c = c
			return nil
		}
		// The old listener is closed, but the kernel may take a moment
		// to release the port; anything else will not get better.
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			// k.c stays the closed cluster; closing it again is a
			// no-op, so Close and another Restart still work.
			return fmt.Errorf("restarting kafka broker on port %d: %w", k.port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Close shuts the broker down, saving its state if it has a DataDir. It may
// be called more than once.
func (k *Kafka) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return
	}
	k.closed = true
	k.c.Close()
}
