package autoscale

import (
	"bytes"
	"fmt"
	"os"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the autoscaler's YAML file. Every field is optional; the
// defaults are those DefaultConfig prints.
type Config struct {
	// Period between evaluations. Default 1s.
	Period Duration `yaml:"period"`
	// StaleAfter: observations older than this are not acted on.
	// Default 3 periods.
	StaleAfter Duration `yaml:"stale_after"`
	// Store is the storage ring's policy.
	Store StoreConfig `yaml:"store"`
	// Launch describes new nodes.
	Launch LaunchConfig `yaml:"launch"`
}

// LaunchConfig is how new nodes are started.
type LaunchConfig struct {
	// Capacity of each node, e.g. "64MiB"; empty means the filesystem's.
	Capacity string `yaml:"capacity"`
	// Replicas is the replication factor passed to each node. Default 3.
	Replicas int `yaml:"replicas"`
	// Flags are further `tide node` flags.
	Flags []string `yaml:"flags"`
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	if c.Period == 0 {
		c.Period = Duration(time.Second)
	}
	if c.StaleAfter == 0 {
		c.StaleAfter = 3 * c.Period
	}
	c.Store = c.Store.WithDefaults()
	if c.Launch.Replicas == 0 {
		c.Launch.Replicas = 3
	}
	if len(c.Launch.Flags) == 0 {
		c.Launch.Flags = nil
	}
	return c
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	c = c.WithDefaults()
	if c.Period < Duration(10*time.Millisecond) {
		return fmt.Errorf("period %s: too short", time.Duration(c.Period))
	}
	if c.StaleAfter < c.Period {
		return fmt.Errorf("stale_after %s is shorter than the period %s", time.Duration(c.StaleAfter), time.Duration(c.Period))
	}
	if c.Launch.Replicas < 1 {
		return fmt.Errorf("launch.replicas %d: need at least 1", c.Launch.Replicas)
	}
	return c.Store.Validate()
}

// LoadConfig reads a YAML config file strictly: an unknown key is an
// error, so a typo does not silently fall back to a default.
func LoadConfig(path string) (Config, error) {
	var c Config
	if path == "" {
		return c.WithDefaults(), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && err.Error() != "EOF" {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c.WithDefaults(), nil
}

// DefaultConfig is the documented default configuration, as YAML.
const DefaultConfig = `# tide autoscale configuration. Every key is optional; these are the defaults.
period: 1s            # how often metrics are read and the policy evaluated
stale_after: 3s       # observations older than this are not acted on (default: 3 periods)
store:
  min: 3              # never fewer nodes
  max: 16             # never more nodes
  high: 70            # scale out when any node's disk use is >= high percent ...
  periods: 3          # ... for this many consecutive periods (K)
  low: 30             # scale in when every node is below low percent for K periods
  ops_high: 0         # also scale out when a node serves >= this many requests/s (0: off)
  ops_low: 0          # scale in only below this many requests/s per node (default ops_high/4)
  scale_out_cooldown: 10s   # least time after any change before a scale out
  scale_in_cooldown: 1m0s   # least time after any change before a scale in
launch:
  capacity: ""        # --capacity of new nodes, e.g. 64MiB (empty: the filesystem's size)
  replicas: 3         # --replicas of new nodes
  flags: []           # further tide node flags
`
