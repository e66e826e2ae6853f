package config

import "testing"

func TestEnumsNameTheAllowedValues(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{Compression("brotli").Validate(), `"brotli" must be none, gzip, snappy, lz4 or zstd`},
		{SASLMechanism("GSSAPI").Validate(), `"GSSAPI" must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512`},
		{OnUnpublishable("drop").Validate(), `"drop" must be stop or dead_letter`},
		{OnUpdate("explode").Validate(), `"explode" must be warn, error or fatal`},
		{OnMissingColumn("skip").Validate(), `"skip" must be error or ignore`},
		{LogLevel("loud").Validate(), `"loud" must be debug, info, warn or error`},
		{LogFormat("xml").Validate(), `"xml" must be json or console`},
		{Partitioner("crc").Validate(), `"crc" must be murmur2 (Java client default), fnv1a (sarama default) or random`},
	}
	for _, c := range cases {
		if c.err == nil || c.err.Error() != c.want {
			t.Errorf("got %v, want %s", c.err, c.want)
		}
	}
	for _, err := range []error{CompressionZstd.Validate(), SASLNone.Validate(), UnpublishableStop.Validate(), UnpublishableUnset.Validate(), OnUpdateFatal.Validate(),
		OnMissingColumnIgnore.Validate(), LogDebug.Validate(), LogConsole.Validate(), PartitionerRandom.Validate()} {
		if err != nil {
			t.Errorf("a constant is rejected: %v", err)
		}
	}
}
