package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newRingCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ring ADDR",
		Short: "Show the ring: members, successors, bytes stored, disk use",
		Long: `Walk the ring from the node at ADDR (a Chord address) along successor
pointers and print every member: identifier, addresses, successor list, files
and bytes stored, and disk use. --json prints a JSON array for scripts.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newStoreClient()
			if err != nil {
				return err
			}
			defer c.Close()
			infos, err := c.Ring(cmd.Context(), nodeAddr(args[0]))
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(infos)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tCHORD\tHTTP\tFILES\tBYTES\tDISK\tSUCCESSORS")
			for _, in := range infos {
				disk := "-"
				if in.DiskCap > 0 {
					disk = fmt.Sprintf("%.1f%% of %s", in.DiskPercent, human(in.DiskCap))
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", in.ID, in.ChordAddr, in.HTTPAddr, in.Files, human(in.Bytes), disk, strings.Join(in.Successors, ","))
			}
			w.Flush()
			if len(infos) == 1 {
				fmt.Println("1 node")
			} else {
				fmt.Printf("%d nodes\n", len(infos))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
