package main

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestGlobalFlagsFromEnv checks, for every command, that each global flag
// takes its value from TIDE_<FLAG> when the command line does not give it,
// that the command line wins, and that a bad value is refused with the
// variable's name.
func TestGlobalFlagsFromEnv(t *testing.T) {
	values := map[string][2]string{ // flag -> a value other than the default, and a bad one ("": any string is taken)
		"log-level":  {"debug", "loud"},
		"log-format": {"json", "xml"},
		"tls-ca":     {"/etc/tide/ca.pem", ""},
		"tls-cert":   {"/etc/tide/node.pem", ""},
		"tls-key":    {"/etc/tide/node-key.pem", ""},
		"auth-token": {"s3cret", ""},
	}
	root := newRoot()
	root.PersistentFlags().VisitAll(func(f *pflag.Flag) {
		if _, ok := values[f.Name]; !ok {
			t.Errorf("global flag --%s has no case in this test", f.Name)
		}
	})
	var cmds []*cobra.Command
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		cmds = append(cmds, c)
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	for name, v := range values {
		env := "TIDE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		for _, c := range cmds {
			t.Run(c.CommandPath()+"/"+env, func(t *testing.T) {
				t.Setenv(env, v[0])
				root := newRoot()
				cmd, _, err := root.Find(strings.Fields(c.CommandPath())[1:])
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.ParseFlags(nil); err != nil {
					t.Fatal(err)
				}
				if err := applyEnv(cmd); err != nil {
					t.Fatal(err)
				}
				if got := cmd.Flag(name).Value.String(); got != v[0] {
					t.Fatalf("--%s = %q with %s=%s, want %q", name, got, env, v[0], v[0])
				}
				// The command line wins.
				root = newRoot()
				cmd, _, _ = root.Find(strings.Fields(c.CommandPath())[1:])
				def := cmd.Flag(name).DefValue
				if err := cmd.ParseFlags([]string{"--" + name + "=" + def}); err != nil {
					t.Fatal(err)
				}
				if err := applyEnv(cmd); err != nil {
					t.Fatal(err)
				}
				if got := cmd.Flag(name).Value.String(); got != def {
					t.Fatalf("--%s=%s on the command line gave %q with %s=%s set", name, def, got, env, v[0])
				}
			})
		}
		if v[1] == "" {
			continue
		}
		t.Run("bad "+env, func(t *testing.T) {
			t.Setenv(env, v[1])
			root := newRoot()
			root.AddCommand(&cobra.Command{Use: "probe", RunE: func(*cobra.Command, []string) error { return nil }})
			root.SetArgs([]string{"probe"})
			err := root.Execute()
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("%s=%s: %v, want an error naming --%s", env, v[1], err, name)
			}
		})
	}
}

// TestUnknownSubcommandFails checks that a typo in a subcommand of any
// command group fails with "unknown command", as at the root, instead of
// printing the group's help and succeeding.
func TestUnknownSubcommandFails(t *testing.T) {
	var groups []string
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if c.HasSubCommands() {
			groups = append(groups, c.CommandPath())
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(newRoot())
	if len(groups) < 4 {
		t.Fatalf("found only %d command groups: %v", len(groups), groups)
	}
	for _, g := range groups {
		args := append(strings.Fields(g)[1:], "no-such-command")
		root := newRoot()
		root.SetArgs(args)
		root.SetOut(&strings.Builder{})
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), "unknown command") {
			t.Errorf("tide %s: %v, want an unknown command error", strings.Join(args, " "), err)
		}
	}
	// A group alone still prints its help.
	root := newRoot()
	var out strings.Builder
	root.SetArgs([]string{"log"})
	root.SetOut(&out)
	if err := root.Execute(); err != nil || !strings.Contains(out.String(), "Available Commands") {
		t.Errorf("tide log: %v, output %q", err, out.String())
	}
}
