package dbusapi

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/containers/qmd/internal/apierr"
	"github.com/containers/qmd/internal/incident"
	"github.com/godbus/dbus/v5"
	"go.uber.org/zap"
)

// Limits of ListIncidents.
const (
	DefaultIncidentLimit = 100
	MaxIncidentLimit     = 1000
)

// DefaultSignalQueue is how many signal emissions may wait for the bus
// before new ones are dropped (the notifying goroutine never blocks).
const DefaultSignalQueue = 1024

// Options configure a Server. Zero values are defaults.
type Options struct {
	// Version is the Manager's Version property.
	Version string
	// AdminGroup may call mutating methods besides root (DefaultAdminGroup).
	AdminGroup string
	// CallerUID resolves a bus sender to its unix uid. Default: ask the bus
	// (org.freedesktop.DBus.GetConnectionUnixUser).
	CallerUID func(sender string) (uint32, error)
	// IsAdmin says whether uid may call mutating methods. Default:
	// GroupAdmin(AdminGroup).
	IsAdmin func(uid uint32) (bool, error)
	// SignalQueue bounds queued signal emissions (DefaultSignalQueue).
	SignalQueue int
}

// Server exports qmd's objects on a bus connection. Create it with New,
// then call Export; call PartitionChanged, IncidentAdded, ManagerChanged
// and Sync as things change; Close on shutdown. All methods are safe for
// concurrent use, and the notification methods never block on the bus.
type Server struct {
	conn      *dbus.Conn
	b         Backend
	log       *zap.Logger
	opts      Options
	callerUID func(string) (uint32, error)
	isAdmin   func(uint32) (bool, error)

	mu               sync.Mutex
	parts            map[string]dbus.ObjectPath // exported partitions
	sent             map[string]PartitionInfo   // last values announced, per partition
	sentStatus       string
	sentLastIncident uint64
	exported, named  bool
	closed           bool

	sigs    chan func()
	sigDone chan struct{}
	dropped atomic.Uint64
}

// New returns a server for conn (a connection to the system bus, or any
// bus) delegating to b. Nothing is exported until Export.
func New(conn *dbus.Conn, b Backend, log *zap.Logger, opts Options) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	if opts.AdminGroup == "" {
		opts.AdminGroup = DefaultAdminGroup
	}
	if opts.SignalQueue <= 0 {
		opts.SignalQueue = DefaultSignalQueue
	}
	s := &Server{
		conn:      conn,
		b:         b,
		log:       log,
		opts:      opts,
		callerUID: opts.CallerUID,
		isAdmin:   opts.IsAdmin,
		parts:     map[string]dbus.ObjectPath{},
		sent:      map[string]PartitionInfo{},
		sigs:      make(chan func(), opts.SignalQueue),
		sigDone:   make(chan struct{}),
	}
	if s.callerUID == nil {
		if conn != nil {
			s.callerUID = busCallerUID(conn)
		} else {
			s.callerUID = func(string) (uint32, error) { return 0, errors.New("no bus connection") }
		}
	}
	if s.isAdmin == nil {
		s.isAdmin = GroupAdmin(opts.AdminGroup)
	}
	go s.emitLoop()
	return s
}

func (s *Server) emitLoop() {
	defer close(s.sigDone)
	for f := range s.sigs {
		f()
	}
}

// enqueue queues a signal emission. Called with s.mu held.
func (s *Server) enqueue(f func()) {
	if s.closed || s.conn == nil {
		return
	}
	select {
	case s.sigs <- f:
	default:
		if n := s.dropped.Add(1); n == 1 || n%100 == 0 {
			s.log.Warn("dbus signal queue full, dropping signals", zap.Uint64("dropped", n))
		}
	}
}

func (s *Server) emit(path dbus.ObjectPath, name string, values ...any) {
	if err := s.conn.Emit(path, name, values...); err != nil {
		s.log.Debug("emit dbus signal", zap.String("signal", name), zap.String("path", string(path)), zap.Error(err))
	}
}

// Export exports the Manager object and one object per partition of the
// backend, and only then requests the bus name BusName. It fails when the
// name is owned by another connection (or the bus policy forbids owning
// it).
func (s *Server) Export() error {
	if s.conn == nil {
		return errors.New("dbus server has no connection")
	}
	s.mu.Lock()
	if err := s.exportManagerLocked(); err != nil {
		s.mu.Unlock()
		return err
	}
	s.exported = true
	s.sentStatus = s.b.Status()
	s.sentLastIncident = s.b.LastIncidentID()
	err := s.syncLocked()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	reply, err := s.conn.RequestName(BusName, dbus.NameFlagDoNotQueue)
	if err != nil {
		return fmt.Errorf("request bus name %s: %w", BusName, err)
	}
	switch reply {
	case dbus.RequestNameReplyPrimaryOwner, dbus.RequestNameReplyAlreadyOwner:
	default:
		return fmt.Errorf("request bus name %s: already owned by another connection (is another qmd running?)", BusName)
	}
	s.mu.Lock()
	s.named = true
	s.mu.Unlock()
	s.log.Info("dbus name acquired", zap.String("name", BusName))
	return nil
}

func (s *Server) exportManagerLocked() error {
	if err := s.conn.ExportMethodTable(s.managerMethods(), ManagerPath, ManagerInterface); err != nil {
		return fmt.Errorf("export %s: %w", ManagerPath, err)
	}
	if err := s.conn.ExportMethodTable(s.propertiesMethods(managerIface, s.managerProps), ManagerPath, ifaceProperties); err != nil {
		return fmt.Errorf("export %s properties: %w", ManagerPath, err)
	}
	intro := map[string]any{"Introspect": func() (string, *dbus.Error) {
		s.mu.Lock()
		var children []string
		if len(s.parts) > 0 {
			children = []string{"partition"}
		}
		s.mu.Unlock()
		return introspectXML(managerIface, children), nil
	}}
	if err := s.conn.ExportMethodTable(intro, ManagerPath, ifaceIntrospectable); err != nil {
		return fmt.Errorf("export %s introspection: %w", ManagerPath, err)
	}
	return nil
}

// Sync exports objects for partitions the backend has gained and removes
// those of partitions it lost (call it after a Reload changed the set).
func (s *Server) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.exported || s.closed {
		return nil
	}
	return s.syncLocked()
}

func (s *Server) syncLocked() error {
	want := map[string]PartitionInfo{}
	for _, p := range s.b.Partitions() {
		want[p.Name] = p
	}
	var errs []error
	for name := range s.parts {
		if _, ok := want[name]; !ok {
			s.unexportPartitionLocked(name)
		}
	}
	for name, info := range want {
		if _, ok := s.parts[name]; ok {
			continue
		}
		if err := s.exportPartitionLocked(name); err != nil {
			errs = append(errs, err)
			continue
		}
		s.sent[name] = info
	}
	return errors.Join(errs...)
}

func (s *Server) exportPartitionLocked(name string) error {
	path := PartitionPath(name)
	intro := map[string]any{"Introspect": func() (string, *dbus.Error) {
		return introspectXML(partitionIface, nil), nil
	}}
	props := s.propertiesMethods(partitionIface, func() (map[string]dbus.Variant, error) {
		info, err := s.b.Partition(name)
		if err != nil {
			return nil, partitionErr(err, name)
		}
		return partitionProps(info), nil
	})
	for _, e := range []struct {
		iface string
		m     map[string]any
	}{{PartitionInterface, s.partitionMethods(name)}, {ifaceProperties, props}, {ifaceIntrospectable, intro}} {
		if err := s.conn.ExportMethodTable(e.m, path, e.iface); err != nil {
			return fmt.Errorf("export partition %s at %s: %w", name, path, err)
		}
	}
	s.parts[name] = path
	s.log.Debug("dbus partition exported", zap.String("partition", name), zap.String("path", string(path)))
	return nil
}

func (s *Server) unexportPartitionLocked(name string) {
	path := s.parts[name]
	for _, iface := range []string{PartitionInterface, ifaceProperties, ifaceIntrospectable} {
		_ = s.conn.ExportMethodTable(nil, path, iface)
	}
	delete(s.parts, name)
	delete(s.sent, name)
	s.log.Debug("dbus partition removed", zap.String("partition", name))
}

// PartitionChanged announces a partition's new state: PropertiesChanged
// for the properties (that emit changes) whose value differs from the last
// announced one, then StateChanged(active, sub, reason) when ActiveState or
// SubState changed. An unknown partition is exported first.
func (s *Server) PartitionChanged(info PartitionInfo, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	prev, known := s.sent[info.Name]
	if !known {
		prev = PartitionInfo{Name: info.Name}
	}
	s.sent[info.Name] = info
	if !s.exported {
		return
	}
	if _, ok := s.parts[info.Name]; !ok {
		if err := s.exportPartitionLocked(info.Name); err != nil {
			s.log.Warn("export partition", zap.String("partition", info.Name), zap.Error(err))
			return
		}
	}
	path := s.parts[info.Name]
	changed := changedProps(prev, info)
	stateChanged := prev.ActiveState != info.ActiveState || prev.SubState != info.SubState
	if len(changed) == 0 && !stateChanged {
		return
	}
	s.enqueue(func() {
		if len(changed) > 0 {
			s.emit(path, ifaceProperties+".PropertiesChanged", PartitionInterface, changed, []string{})
		}
		if stateChanged {
			s.emit(path, PartitionInterface+".StateChanged", info.ActiveState, info.SubState, reason)
		}
	})
}

// IncidentAdded emits the Manager's IncidentNew signal and the change of
// LastIncidentId.
func (s *Server) IncidentAdded(inc incident.Incident) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.exported {
		return
	}
	bump := inc.ID > s.sentLastIncident
	if bump {
		s.sentLastIncident = inc.ID
	}
	s.enqueue(func() {
		s.emit(ManagerPath, ManagerInterface+".IncidentNew", inc.ID, inc.Partition, string(inc.Type), inc.Summary)
		if bump {
			s.emit(ManagerPath, ifaceProperties+".PropertiesChanged", ManagerInterface,
				map[string]dbus.Variant{"LastIncidentId": dbus.MakeVariant(inc.ID)}, []string{})
		}
	})
}

// ManagerChanged re-reads the backend's Status (and LastIncidentId) and
// emits PropertiesChanged for what changed. Call it when qmd's health
// changes.
func (s *Server) ManagerChanged() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.exported {
		return
	}
	changed := map[string]dbus.Variant{}
	if st := s.b.Status(); st != s.sentStatus {
		s.sentStatus = st
		changed["Status"] = dbus.MakeVariant(st)
	}
	if id := s.b.LastIncidentID(); id > s.sentLastIncident {
		s.sentLastIncident = id
		changed["LastIncidentId"] = dbus.MakeVariant(id)
	}
	if len(changed) == 0 {
		return
	}
	s.enqueue(func() {
		s.emit(ManagerPath, ifaceProperties+".PropertiesChanged", ManagerInterface, changed, []string{})
	})
}

// DroppedSignals is how many signal emissions were dropped because the
// queue was full.
func (s *Server) DroppedSignals() uint64 { return s.dropped.Load() }

// Close releases the bus name, removes the objects and waits until queued
// signals were sent. It does not close the connection.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.sigs)
	named, exported := s.named, s.exported
	s.mu.Unlock()
	<-s.sigDone

	var err error
	if named {
		if _, rerr := s.conn.ReleaseName(BusName); rerr != nil {
			err = fmt.Errorf("release bus name %s: %w", BusName, rerr)
		}
	}
	if exported {
		s.mu.Lock()
		for name := range s.parts {
			s.unexportPartitionLocked(name)
		}
		for _, iface := range []string{ManagerInterface, ifaceProperties, ifaceIntrospectable} {
			_ = s.conn.ExportMethodTable(nil, ManagerPath, iface)
		}
		s.mu.Unlock()
	}
	return err
}

// ---- properties

func partitionProps(p PartitionInfo) map[string]dbus.Variant {
	return map[string]dbus.Variant{
		"Name":                 dbus.MakeVariant(p.Name),
		"ContainerId":          dbus.MakeVariant(p.ContainerID),
		"ActiveState":          dbus.MakeVariant(p.ActiveState),
		"SubState":             dbus.MakeVariant(p.SubState),
		"Result":               dbus.MakeVariant(p.Result),
		"MainPID":              dbus.MakeVariant(p.MainPID),
		"ControlGroup":         dbus.MakeVariant(p.ControlGroup),
		"MemoryCurrent":        dbus.MakeVariant(p.MemoryCurrent),
		"MemoryHigh":           dbus.MakeVariant(p.MemoryHigh),
		"MemoryMax":            dbus.MakeVariant(p.MemoryMax),
		"OOMScoreAdjust":       dbus.MakeVariant(p.OOMScoreAdjust),
		"NRestarts":            dbus.MakeVariant(p.NRestarts),
		"NOOMKills":            dbus.MakeVariant(p.NOOMKills),
		"StateChangeTimestamp": dbus.MakeVariant(p.StateChangeTimestamp),
		"Conditions":           dbus.MakeVariant(nonNil(p.Conditions)),
		"PodmanLatencyUSec":    dbus.MakeVariant(p.PodmanLatencyUSec),
	}
}

// nonNil: D-Bus has no null; an empty array is what clients expect.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// changedProps returns the properties annotated EmitsChangedSignal=true
// whose values differ between a and b.
func changedProps(a, b PartitionInfo) map[string]dbus.Variant {
	pa, pb := partitionProps(a), partitionProps(b)
	out := map[string]dbus.Variant{}
	for _, d := range partitionIface.props {
		if d.emits != emitsTrue {
			continue
		}
		if !reflect.DeepEqual(pa[d.name].Value(), pb[d.name].Value()) {
			out[d.name] = pb[d.name]
		}
	}
	return out
}

func (s *Server) managerProps() (map[string]dbus.Variant, error) {
	st := s.b.IncidentStats()
	return map[string]dbus.Variant{
		"Version":            dbus.MakeVariant(s.opts.Version),
		"Status":             dbus.MakeVariant(s.b.Status()),
		"LastIncidentId":     dbus.MakeVariant(s.b.LastIncidentID()),
		"IncidentsDropped":   dbus.MakeVariant(st.Dropped),
		"IncidentsCoalesced": dbus.MakeVariant(st.Coalesced),
		"IncidentsPending":   dbus.MakeVariant(st.Pending),
		"Protected":          s.protectedProp(),
	}, nil
}

// propertiesMethods implements org.freedesktop.DBus.Properties for an
// object implementing d, reading values with get. Every property is
// read-only.
func (s *Server) propertiesMethods(d ifaceDef, get func() (map[string]dbus.Variant, error)) map[string]any {
	known := map[string]bool{}
	for _, p := range d.props {
		known[p.name] = true
	}
	checkIface := func(iface string) *dbus.Error {
		if iface != d.name && iface != "" {
			return newError(ErrorUnknownInterface, fmt.Sprintf("object does not implement interface %q", iface))
		}
		return nil
	}
	return map[string]any{
		"Get": func(iface, prop string) (dbus.Variant, *dbus.Error) {
			if err := checkIface(iface); err != nil {
				return dbus.Variant{}, err
			}
			if !known[prop] {
				return dbus.Variant{}, newError(ErrorUnknownProperty, fmt.Sprintf("no property %q on interface %s", prop, d.name))
			}
			all, err := get()
			if err != nil {
				return dbus.Variant{}, dbusError(err)
			}
			return all[prop], nil
		},
		"GetAll": func(iface string) (map[string]dbus.Variant, *dbus.Error) {
			if iface != d.name && iface != "" {
				// The object's other interfaces have no properties.
				return map[string]dbus.Variant{}, nil
			}
			all, err := get()
			if err != nil {
				return nil, dbusError(err)
			}
			return all, nil
		},
		"Set": func(iface, prop string, _ dbus.Variant) *dbus.Error {
			if err := checkIface(iface); err != nil {
				return err
			}
			if !known[prop] {
				return newError(ErrorUnknownProperty, fmt.Sprintf("no property %q on interface %s", prop, d.name))
			}
			return newError(ErrorPropertyReadOnly, fmt.Sprintf("property %s is read-only; use the methods of %s to change it", prop, d.name))
		},
	}
}

// ---- Manager methods

type partitionEntry struct {
	Name, ActiveState, SubState string
	Path                        dbus.ObjectPath
}

type incidentEntry struct {
	ID, Time                 uint64
	Partition, Type, Summary string
	Details                  map[string]dbus.Variant
}

func (s *Server) managerMethods() map[string]any {
	return map[string]any{
		"ListPartitions": s.listPartitions,
		"GetPartition":   s.getPartition,
		"ListIncidents":  s.listIncidents,
		"Reload":         s.reload,
	}
}

func (s *Server) listPartitions() ([]partitionEntry, *dbus.Error) {
	parts := s.b.Partitions()
	sort.Slice(parts, func(i, j int) bool { return parts[i].Name < parts[j].Name })
	out := make([]partitionEntry, 0, len(parts))
	for _, p := range parts {
		out = append(out, partitionEntry{p.Name, p.ActiveState, p.SubState, PartitionPath(p.Name)})
	}
	return out, nil
}

func (s *Server) getPartition(name string) (dbus.ObjectPath, *dbus.Error) {
	if err := ValidatePartitionName(name); err != nil {
		return "/", dbusError(apierr.InvalidArgs("%v", err))
	}
	if _, err := s.b.Partition(name); err != nil {
		return "/", dbusError(partitionErr(err, name))
	}
	return PartitionPath(name), nil
}

func (s *Server) listIncidents(partition string, afterID uint64, limit uint32) ([]incidentEntry, *dbus.Error) {
	if partition != "" {
		if err := ValidatePartitionName(partition); err != nil {
			return nil, dbusError(apierr.InvalidArgs("%v", err))
		}
	}
	n := int(limit)
	if limit == 0 {
		n = DefaultIncidentLimit
	} else if limit > MaxIncidentLimit {
		n = MaxIncidentLimit
	}
	incs, err := s.b.Incidents(partition, afterID, n)
	if err != nil {
		return nil, dbusError(fmt.Errorf("list incidents: %w", err))
	}
	out := make([]incidentEntry, 0, len(incs))
	for _, inc := range incs {
		var t uint64
		if us := inc.Time.UnixMicro(); us > 0 {
			t = uint64(us)
		}
		det := make(map[string]dbus.Variant, len(inc.Details))
		for k, v := range inc.Details {
			det[k] = dbus.MakeVariant(v)
		}
		out = append(out, incidentEntry{inc.ID, t, inc.Partition, string(inc.Type), inc.Summary, det})
	}
	return out, nil
}

func (s *Server) reload(sender dbus.Sender) *dbus.Error {
	if derr := s.mutate(sender, "Reload", "", s.b.Reload); derr != nil {
		return derr
	}
	// The partition set may have changed.
	if err := s.Sync(); err != nil {
		s.log.Warn("dbus sync after reload", zap.Error(err))
	}
	s.ManagerChanged()
	return nil
}

// ---- Partition methods

func (s *Server) partitionMethods(name string) map[string]any {
	simple := func(method string, f func(string) error) func(dbus.Sender) *dbus.Error {
		return func(sender dbus.Sender) *dbus.Error {
			return s.mutate(sender, method, name, func() error { return f(name) })
		}
	}
	return map[string]any{
		"Start":       simple("Start", s.b.Start),
		"Stop":        simple("Stop", s.b.Stop),
		"Restart":     simple("Restart", s.b.Restart),
		"Freeze":      simple("Freeze", s.b.Freeze),
		"Thaw":        simple("Thaw", s.b.Thaw),
		"ResetFailed": simple("ResetFailed", s.b.ResetFailed),
		"SetMemoryHigh": func(sender dbus.Sender, bytes uint64, runtime bool) *dbus.Error {
			return s.mutate(sender, "SetMemoryHigh", name, func() error {
				if bytes == 0 {
					return apierr.InvalidArgs("memory.high must be > 0 (use %d for infinity)", uint64(math.MaxUint64))
				}
				info, err := s.b.Partition(name)
				if err != nil {
					return err
				}
				if bytes != math.MaxUint64 && info.MemoryMax != math.MaxUint64 && bytes > info.MemoryMax {
					return apierr.InvalidArgs("memory.high %s is above memory.max %s of partition %s; raise MemoryMax first",
						formatBytes(bytes), formatBytes(info.MemoryMax), name)
				}
				return s.b.SetMemoryHigh(name, bytes, runtime)
			})
		},
		"SetMemoryMax": func(sender dbus.Sender, bytes uint64, runtime bool) *dbus.Error {
			return s.mutate(sender, "SetMemoryMax", name, func() error {
				if bytes == 0 {
					return apierr.InvalidArgs("memory.max must be > 0 (use %d for infinity)", uint64(math.MaxUint64))
				}
				return s.b.SetMemoryMax(name, bytes, runtime)
			})
		},
		"SetOOMScoreAdjust": func(sender dbus.Sender, value int32, runtime bool) *dbus.Error {
			return s.mutate(sender, "SetOOMScoreAdjust", name, func() error {
				if value < -1000 || value > 1000 {
					return apierr.InvalidArgs("oom_score_adj %d is outside -1000..1000", value)
				}
				if value < 0 {
					return apierr.InvalidArgs("oom_score_adj %d is negative: the QM partition must stay a preferred OOM victim over ASIL processes; use 0..1000", value)
				}
				return s.b.SetOOMScoreAdjust(name, value, runtime)
			})
		},
	}
}

// mutate authorizes the caller, validates the partition name (when not
// empty) and runs fn, mapping its error.
func (s *Server) mutate(sender dbus.Sender, method, name string, fn func() error) *dbus.Error {
	uid, err := s.authorize(sender, method)
	if err != nil {
		s.log.Warn("dbus call denied", zap.String("method", method), zap.String("partition", name),
			zap.String("sender", string(sender)), zap.Error(err))
		return dbusError(err)
	}
	if name != "" {
		if err := ValidatePartitionName(name); err != nil {
			return dbusError(apierr.InvalidArgs("%v", err))
		}
	}
	if err := fn(); err != nil {
		s.log.Info("dbus call failed", zap.String("method", method), zap.String("partition", name),
			zap.Uint32("uid", uid), zap.Error(err))
		return dbusError(partitionErr(err, name))
	}
	s.log.Info("dbus call", zap.String("method", method), zap.String("partition", name), zap.Uint32("uid", uid))
	return nil
}

// partitionErr names the partition in err's message when it does not
// already.
func partitionErr(err error, name string) error {
	if name == "" || strings.Contains(err.Error(), name) {
		return err
	}
	return fmt.Errorf("partition %s: %w", name, err)
}

func formatBytes(b uint64) string {
	if b == math.MaxUint64 {
		return "infinity"
	}
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	units := "KMGTPE"
	v, i := float64(b)/unit, 0
	for v >= unit && i < len(units)-1 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.4g%ci (%d bytes)", v, units[i], b)
}
