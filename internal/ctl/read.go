package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/containers/qmd/internal/dbusapi"
	"github.com/godbus/dbus/v5"
)

// statusIncidents is how many incidents `status PARTITION` shows.
const statusIncidents = 5

// followIncidents is how many existing incidents `incidents --follow`
// shows when neither --after nor --limit is given.
const followIncidents = 10

// followPoll is how often `incidents --follow` lists new incidents even
// without a signal (signals may be dropped when qmd's queue is full).
var followPoll = 30 * time.Second

// ---- JSON shapes (stable API for scripts)

type managerJSON struct {
	Version        string               `json:"version"`
	Status         string               `json:"status"`
	LastIncidentID uint64               `json:"last_incident_id"`
	Partitions     []partitionBriefJSON `json:"partitions"`
}

type partitionBriefJSON struct {
	Name        string `json:"name"`
	ActiveState string `json:"active_state"`
	SubState    string `json:"sub_state"`
	ObjectPath  string `json:"object_path"`
}

type partitionJSON struct {
	Name                 string   `json:"name"`
	ActiveState          string   `json:"active_state"`
	SubState             string   `json:"sub_state"`
	Result               string   `json:"result"`
	ContainerID          string   `json:"container_id"`
	MainPID              uint32   `json:"main_pid"`
	ControlGroup         string   `json:"control_group"`
	MemoryCurrent        uint64   `json:"memory_current"`
	MemoryHigh           *uint64  `json:"memory_high"` // null = infinity
	MemoryMax            *uint64  `json:"memory_max"`  // null = infinity
	OOMScoreAdjust       int32    `json:"oom_score_adjust"`
	NRestarts            uint32   `json:"n_restarts"`
	NOOMKills            uint32   `json:"n_oom_kills"`
	StateChangeTimestamp uint64   `json:"state_change_timestamp_usec"` // 0 = unknown
	StateChangeTime      *string  `json:"state_change_time"`           // RFC 3339, null = unknown
	Conditions           []string `json:"conditions"`                  // throttled, frozen, cpu-limited, podman-degraded
	PodmanLatencyUSec    uint64   `json:"podman_latency_usec"`         // the last Podman operation
}

type partitionStatusJSON struct {
	partitionJSON
	RecentIncidents []incidentJSON `json:"recent_incidents"`
}

type incidentJSON struct {
	ID        uint64            `json:"id"`
	Time      *string           `json:"time"`      // RFC 3339, null = unknown
	TimeUsec  uint64            `json:"time_usec"` // usec since the epoch
	Partition string            `json:"partition"`
	Type      string            `json:"type"`
	Summary   string            `json:"summary"`
	Details   map[string]string `json:"details"`
}

func limitPtr(v uint64) *uint64 {
	if v == infinity {
		return nil
	}
	return &v
}

func timePtr(us uint64) *string {
	t := usecTime(us)
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.RFC3339Nano)
	return &s
}

func toPartitionJSON(p dbusapi.PartitionInfo) partitionJSON {
	return partitionJSON{
		Name: p.Name, ActiveState: p.ActiveState, SubState: p.SubState, Result: p.Result,
		ContainerID: p.ContainerID, MainPID: p.MainPID, ControlGroup: p.ControlGroup,
		MemoryCurrent: p.MemoryCurrent, MemoryHigh: limitPtr(p.MemoryHigh), MemoryMax: limitPtr(p.MemoryMax),
		OOMScoreAdjust: p.OOMScoreAdjust, NRestarts: p.NRestarts, NOOMKills: p.NOOMKills,
		StateChangeTimestamp: p.StateChangeTimestamp, StateChangeTime: timePtr(p.StateChangeTimestamp),
		Conditions: append([]string{}, p.Conditions...), PodmanLatencyUSec: p.PodmanLatencyUSec,
	}
}

func toIncidentJSON(inc incidentEntry) incidentJSON {
	det := make(map[string]string, len(inc.Details))
	for k, v := range inc.Details {
		if s, ok := v.Value().(string); ok {
			det[k] = s
		} else {
			det[k] = fmt.Sprint(v.Value())
		}
	}
	return incidentJSON{ID: inc.ID, Time: timePtr(inc.Time), TimeUsec: inc.Time, Partition: inc.Partition,
		Type: inc.Type, Summary: inc.Summary, Details: det}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ---- status

func runStatus(ctx context.Context, inv *invocation) error {
	return withClient(ctx, inv, func(c *client) error {
		if len(inv.args) == 1 {
			return partitionStatus(ctx, c, inv, inv.args[0])
		}
		return managerStatus(ctx, c, inv)
	})
}

func managerStatus(ctx context.Context, c *client, inv *invocation) error {
	m, err := c.manager(ctx)
	if err != nil {
		return err
	}
	parts, err := c.listPartitions(ctx)
	if err != nil {
		return err
	}
	if inv.has("json") {
		out := managerJSON{Version: m.Version, Status: m.Status, LastIncidentID: m.LastIncidentID,
			Partitions: []partitionBriefJSON{}}
		for _, p := range parts {
			out.Partitions = append(out.Partitions, partitionBriefJSON{p.Name, p.ActiveState, p.SubState, string(p.Path)})
		}
		return writeJSON(inv.stdout, out)
	}
	fmt.Fprintf(inv.stdout, "%s qmd\n", bullet(m.Status == "up"))
	tw := tabwriter.NewWriter(inv.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  Version:\t%s\n", m.Version)
	fmt.Fprintf(tw, "  Status:\t%s\n", m.Status)
	fmt.Fprintf(tw, "  LastIncidentId:\t%d\n", m.LastIncidentID)
	fmt.Fprintf(tw, "  Partitions:\t%d\n", len(parts))
	tw.Flush()
	tw = tabwriter.NewWriter(inv.stdout, 0, 4, 2, ' ', 0)
	for _, p := range parts {
		fmt.Fprintf(tw, "    %s %s\t%s\t%s\n", bullet(p.ActiveState == "active"), oneLine(p.Name), p.ActiveState, p.SubState)
	}
	return tw.Flush()
}

// bullet is systemctl's state dot: filled when fine, a cross otherwise.
func bullet(ok bool) string {
	if ok {
		return "●"
	}
	return "×"
}

func partitionStatus(ctx context.Context, c *client, inv *invocation, name string) error {
	path, err := c.partitionPath(ctx, name)
	if err != nil {
		return err
	}
	p, err := c.partitionAt(ctx, path)
	if err != nil {
		return err
	}
	incs, _, err := c.recentIncidents(ctx, name, statusIncidents)
	if err != nil {
		return err
	}
	if inv.has("json") {
		out := partitionStatusJSON{partitionJSON: toPartitionJSON(p), RecentIncidents: []incidentJSON{}}
		for _, inc := range incs {
			out.RecentIncidents = append(out.RecentIncidents, toIncidentJSON(inc))
		}
		if err := writeJSON(inv.stdout, out); err != nil {
			return err
		}
	} else {
		writePartitionStatus(inv.stdout, p, incs, time.Now())
	}
	if p.ActiveState != "active" {
		return exitCode(ExitNotActive)
	}
	return nil
}

// writePartitionHeader writes the first line of `qmd status PARTITION` and
// `qmd show` and returns the writer of the aligned lines under it.
func writePartitionHeader(w io.Writer, p dbusapi.PartitionInfo) (line func(label, value string)) {
	fmt.Fprintf(w, "%s %s - QM partition\n", bullet(p.ActiveState == "active"), oneLine(p.Name))
	return func(label, value string) { fmt.Fprintf(w, "%16s: %s\n", label, value) }
}

// writePartitionProcess writes the partition's container, main PID and
// cgroup lines.
func writePartitionProcess(line func(label, value string), p dbusapi.PartitionInfo) {
	line("Container", orDash(shortID(p.ContainerID)))
	if p.MainPID != 0 {
		line("Main PID", strconv.FormatUint(uint64(p.MainPID), 10))
	} else {
		line("Main PID", "-")
	}
	line("CGroup", orDash(p.ControlGroup))
}

func writePartitionStatus(w io.Writer, p dbusapi.PartitionInfo, incs []incidentEntry, now time.Time) {
	line := writePartitionHeader(w, p)
	active := fmt.Sprintf("%s (%s)", p.ActiveState, p.SubState)
	if t := usecTime(p.StateChangeTimestamp); !t.IsZero() {
		active += fmt.Sprintf(" since %s; %s", formatTimestamp(t), formatAgo(t, now))
	}
	line("Active", active)
	if len(p.Conditions) > 0 {
		line("Conditions", strings.Join(p.Conditions, ", "))
	}
	line("Result", orDash(p.Result))
	writePartitionProcess(line, p)
	line("Memory", fmt.Sprintf("%s (high: %s, max: %s)", formatBytes(p.MemoryCurrent), formatBytes(p.MemoryHigh), formatBytes(p.MemoryMax)))
	line("OOMScoreAdjust", strconv.FormatInt(int64(p.OOMScoreAdjust), 10))
	line("Restarts", strconv.FormatUint(uint64(p.NRestarts), 10))
	line("OOM kills", strconv.FormatUint(uint64(p.NOOMKills), 10))
	fmt.Fprintln(w)
	if len(incs) == 0 {
		fmt.Fprintln(w, "No incidents recorded.")
		return
	}
	fmt.Fprintln(w, "Recent incidents:")
	writeIncidentHeader(w)
	for _, inc := range incs {
		writeIncident(w, inc)
	}
}

// ---- list

func runList(ctx context.Context, inv *invocation) error {
	return withClient(ctx, inv, func(c *client) error {
		entries, err := c.listPartitions(ctx)
		if err != nil {
			return err
		}
		var parts []dbusapi.PartitionInfo
		for _, e := range entries {
			p, err := c.partitionAt(ctx, e.Path)
			if err != nil {
				switch errName(err) {
				case dbusapi.ErrorNoSuchPartition, errUnknownObject, errNoSuchObject:
					continue // removed by a reload meanwhile
				}
				return err
			}
			parts = append(parts, p)
		}
		sort.Slice(parts, func(i, j int) bool { return parts[i].Name < parts[j].Name })
		if inv.has("json") {
			out := []partitionJSON{}
			for _, p := range parts {
				out = append(out, toPartitionJSON(p))
			}
			return writeJSON(inv.stdout, out)
		}
		tw := tabwriter.NewWriter(inv.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tACTIVE\tSUB\tCONTAINER\tPID\tRESTARTS")
		for _, p := range parts {
			pid := "-"
			if p.MainPID != 0 {
				pid = strconv.FormatUint(uint64(p.MainPID), 10)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", oneLine(p.Name), p.ActiveState, p.SubState,
				orDash(shortID(p.ContainerID)), pid, p.NRestarts)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		noun := "partitions"
		if len(parts) == 1 {
			noun = "partition"
		}
		_, err = fmt.Fprintf(inv.stdout, "\n%d %s listed.\n", len(parts), noun)
		return err
	})
}

// ---- incidents

const incidentFormat = "%-6s %-19s %-16s %-16s %s\n"

func writeIncidentHeader(w io.Writer) {
	fmt.Fprintf(w, incidentFormat, "ID", "TIME", "PARTITION", "TYPE", "SUMMARY")
}

func writeIncident(w io.Writer, inc incidentEntry) {
	ts := "-"
	if t := usecTime(inc.Time); !t.IsZero() {
		ts = t.Local().Format("2006-01-02 15:04:05")
	}
	fmt.Fprintf(w, incidentFormat, strconv.FormatUint(inc.ID, 10), ts, orDash(oneLine(inc.Partition)),
		oneLine(inc.Type), oneLine(inc.Summary))
}

func runIncidents(ctx context.Context, inv *invocation) error {
	var partition string
	if len(inv.args) == 1 {
		partition = inv.args[0]
	}
	var after uint64
	hasAfter := inv.has("after")
	if hasAfter {
		v, err := strconv.ParseUint(inv.flags["after"], 10, 64)
		if err != nil {
			return usagef("--after %q: want an incident ID (a non-negative integer)", inv.flags["after"])
		}
		after = v
	}
	limit := 0
	if inv.has("limit") {
		v, err := strconv.Atoi(inv.flags["limit"])
		if err != nil || v <= 0 {
			return usagef("--limit %q: want a positive integer", inv.flags["limit"])
		}
		limit = v
	}
	follow, asJSON := inv.has("follow"), inv.has("json")
	return withClient(ctx, inv, func(c *client) error {
		var sub *subscription
		if follow {
			// Subscribe before listing, so nothing recorded meanwhile is missed.
			var err error
			if sub, err = c.subscribe(); err != nil {
				return err
			}
		}
		var incs []incidentEntry
		var err error
		switch {
		case hasAfter:
			incs, err = c.incidentsAfter(ctx, partition, after, limit)
		case limit > 0 || follow:
			n := limit
			if n == 0 {
				n = followIncidents
			}
			incs, after, err = c.recentIncidents(ctx, partition, n)
		default:
			incs, err = c.incidentsAfter(ctx, partition, 0, 0)
		}
		if err != nil {
			return err
		}
		if !follow {
			if asJSON {
				out := []incidentJSON{}
				for _, inc := range incs {
					out = append(out, toIncidentJSON(inc))
				}
				return writeJSON(inv.stdout, out)
			}
			writeIncidentHeader(inv.stdout)
			for _, inc := range incs {
				writeIncident(inv.stdout, inc)
			}
			return nil
		}
		p := &incidentPrinter{w: inv.stdout, json: asJSON, last: after}
		if !asJSON {
			writeIncidentHeader(inv.stdout)
		}
		if err := p.print(incs); err != nil {
			return err
		}
		return c.follow(ctx, sub, partition, p, inv.stderr)
	})
}

// incidentPrinter prints incidents once each, in ID order (for --follow).
type incidentPrinter struct {
	w    io.Writer
	json bool
	last uint64 // highest ID printed or known to be covered
}

func (p *incidentPrinter) print(incs []incidentEntry) error {
	for _, inc := range incs {
		if inc.ID <= p.last {
			continue
		}
		p.last = inc.ID
		if p.json {
			b, err := json.Marshal(toIncidentJSON(inc))
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(p.w, "%s\n", b); err != nil {
				return err
			}
			continue
		}
		writeIncident(p.w, inc)
	}
	return nil
}

// subscription receives qmd's IncidentNew signals and changes of the
// owner of its bus name.
type subscription struct {
	ch chan *dbus.Signal
}

func incidentMatch() []dbus.MatchOption {
	return []dbus.MatchOption{
		dbus.WithMatchSender(dbusapi.BusName),
		dbus.WithMatchObjectPath(dbusapi.ManagerPath),
		dbus.WithMatchInterface(dbusapi.ManagerInterface),
		dbus.WithMatchMember("IncidentNew"),
	}
}

func ownerMatch() []dbus.MatchOption {
	return []dbus.MatchOption{
		dbus.WithMatchSender("org.freedesktop.DBus"),
		dbus.WithMatchInterface("org.freedesktop.DBus"),
		dbus.WithMatchMember("NameOwnerChanged"),
		dbus.WithMatchArg(0, dbusapi.BusName),
	}
}

func (c *client) subscribe() (*subscription, error) {
	sub := &subscription{ch: make(chan *dbus.Signal, 256)}
	c.conn.Signal(sub.ch)
	if err := c.conn.AddMatchSignal(incidentMatch()...); err != nil {
		return nil, fmt.Errorf("subscribe to IncidentNew: %w", err)
	}
	if err := c.conn.AddMatchSignal(ownerMatch()...); err != nil {
		return nil, fmt.Errorf("subscribe to NameOwnerChanged: %w", err)
	}
	return sub, nil
}

// follow prints new incidents until ctx is done. A signal only says that
// something happened: the incidents are fetched with ListIncidents after
// the last one printed, so none is lost or printed twice. While qmd is
// not running it waits for it to come back.
func (c *client) follow(ctx context.Context, sub *subscription, partition string, p *incidentPrinter, stderr io.Writer) error {
	tick := time.NewTicker(followPoll)
	defer tick.Stop()
	away := false
	fetch := func() error {
		incs, err := c.incidentsAfter(ctx, partition, p.last, 0)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			switch errName(err) {
			case errServiceUnknown, errNameHasNoOwner:
				if !away {
					fmt.Fprintf(stderr, "qmd: qmd is not running (no owner of %s); waiting for it\n", dbusapi.BusName)
				}
				away = true
				return nil
			}
			return err
		}
		away = false
		return p.print(incs)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := fetch(); err != nil {
				return err
			}
		case s, ok := <-sub.ch:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("lost the connection to the bus")
			}
			switch s.Name {
			case dbusapi.ManagerInterface + ".IncidentNew":
				if s.Path != dbusapi.ManagerPath {
					continue
				}
				if len(s.Body) > 0 {
					if id, ok := s.Body[0].(uint64); ok && id <= p.last {
						continue
					}
				}
			case "org.freedesktop.DBus.NameOwnerChanged":
				if len(s.Body) < 3 || s.Body[0] != dbusapi.BusName || s.Body[2] == "" {
					continue // lost: nothing to fetch until it is back
				}
			default:
				continue
			}
			if err := fetch(); err != nil {
				return err
			}
		}
	}
}
