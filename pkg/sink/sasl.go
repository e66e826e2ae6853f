package sink

import (
	"fmt"

	"github.com/IBM/sarama"

	"github.com/relay-dev/relay/pkg/config"
)

func configureSASL(sc *sarama.Config, s config.SASL) error {
	sc.Net.SASL.Enable = true
	sc.Net.SASL.Handshake = true
	sc.Net.SASL.User = s.Username
	sc.Net.SASL.Password = s.Password
	switch s.Mechanism {
	case "PLAIN":
		sc.Net.SASL.Mechanism = sarama.SASLTypePlaintext
	default:
		return fmt.Errorf("kafka.sasl.mechanism: %s is not supported yet", s.Mechanism)
	}
	return nil
}
