// TLS and SASL for the checks: -tls-ca (a PEM CA file: connect with TLS),
// -sasl-mechanism PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 with -user and
// -password. Sarama 1.22 leaves the SCRAM client to its user (the usual one
// is xdg-go/scram, not in Debian): this one follows RFC 5802 with Go's
// standard library.
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"flag"
	"fmt"
	"hash"
	"io/ioutil"
	"strconv"
	"strings"

	"github.com/Shopify/sarama"
)

var (
	tlsCA         = flag.String("tls-ca", "", "PEM file of the CA: connect with TLS")
	saslMechanism = flag.String("sasl-mechanism", "", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
	saslUser      = flag.String("user", "", "SASL user")
	saslPassword  = flag.String("password", "", "SASL password")
)

// secure sets TLS and SASL on c as the flags ask.
func secure(c *sarama.Config) {
	if *tlsCA != "" {
		pem, err := ioutil.ReadFile(*tlsCA)
		if err != nil {
			fail("-tls-ca: %v", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			fail("-tls-ca: no certificate in %s", *tlsCA)
		}
		c.Net.TLS.Enable = true
		c.Net.TLS.Config = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	if *saslMechanism == "" {
		return
	}
	c.Net.SASL.Enable = true
	c.Net.SASL.Handshake = true
	c.Net.SASL.User = *saslUser
	c.Net.SASL.Password = *saslPassword
	switch *saslMechanism {
	case "PLAIN":
		c.Net.SASL.Mechanism = sarama.SASLTypePlaintext
	case "SCRAM-SHA-256":
		c.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
		c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{newHash: sha256.New} }
	case "SCRAM-SHA-512":
		c.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
		c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{newHash: sha512.New} }
	default:
		fail("-sasl-mechanism %q", *saslMechanism)
	}
}

type scramClient struct {
	newHash         func() hash.Hash
	user, password  string
	nonce           string
	clientFirstBare string
	serverSignature []byte
	step            int
}

func (s *scramClient) Begin(user, password, authzID string) error {
	s.user, s.password = user, password
	s.nonce = base64.StdEncoding.EncodeToString([]byte(strconv.FormatInt(int64(len(user))*7919, 36) + "sarama-check-nonce"))
	return nil
}

func (s *scramClient) hmac(key, data []byte) []byte {
	mac := hmac.New(s.newHash, key)
	mac.Write(data)
	return mac.Sum(nil)
}

// pbkdf2 with one output block: SCRAM's Hi().
func (s *scramClient) hi(password, salt []byte, iterations int) []byte {
	u := s.hmac(password, append(append([]byte{}, salt...), 0, 0, 0, 1))
	out := append([]byte{}, u...)
	for i := 1; i < iterations; i++ {
		u = s.hmac(password, u)
		for j := range out {
			out[j] ^= u[j]
		}
	}
	return out
}

func (s *scramClient) Step(challenge string) (string, error) {
	s.step++
	switch s.step {
	case 1:
		name := strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s.user)
		s.clientFirstBare = "n=" + name + ",r=" + s.nonce
		return "n,," + s.clientFirstBare, nil
	case 2:
		fields := map[string]string{}
		for _, field := range strings.Split(challenge, ",") {
			if len(field) > 2 && field[1] == '=' {
				fields[field[:1]] = field[2:]
			}
		}
		nonce := fields["r"]
		if !strings.HasPrefix(nonce, s.nonce) || len(nonce) == len(s.nonce) {
			return "", fmt.Errorf("the server's nonce does not extend ours")
		}
		salt, err := base64.StdEncoding.DecodeString(fields["s"])
		if err != nil {
			return "", err
		}
		iterations, err := strconv.Atoi(fields["i"])
		if err != nil {
			return "", err
		}
		salted := s.hi([]byte(s.password), salt, iterations)
		clientKey := s.hmac(salted, []byte("Client Key"))
		h := s.newHash()
		h.Write(clientKey)
		storedKey := h.Sum(nil)
		withoutProof := "c=biws,r=" + nonce
		authMessage := s.clientFirstBare + "," + challenge + "," + withoutProof
		signature := s.hmac(storedKey, []byte(authMessage))
		proof := make([]byte, len(clientKey))
		for i := range clientKey {
			proof[i] = clientKey[i] ^ signature[i]
		}
		s.serverSignature = s.hmac(s.hmac(salted, []byte("Server Key")), []byte(authMessage))
		return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof), nil
	default:
		verifier := strings.TrimPrefix(challenge, "v=")
		if verifier != base64.StdEncoding.EncodeToString(s.serverSignature) {
			return "", fmt.Errorf("the server's signature does not verify")
		}
		return "", nil
	}
}

func (s *scramClient) Done() bool { return s.step >= 3 }
