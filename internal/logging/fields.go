package logging

import (
	"go.uber.org/zap"

	"github.com/containers/qmd/internal/incident"
)

// Stable field keys. In the journal each key K becomes the field QMD_<K>
// upper-cased (see FieldName); on the console it is printed as is. Use the
// helpers below instead of spelling the keys out, so that
// `journalctl QMD_PARTITION=qm` finds every line about a partition.
const (
	KeyPartition   = "partition"    // QMD_PARTITION
	KeyEvent       = "event"        // QMD_EVENT, an incident.Type; adds MESSAGE_ID
	KeyContainerID = "container_id" // QMD_CONTAINER_ID
	KeyIncidentID  = "incident_id"  // QMD_INCIDENT_ID
	KeyState       = "state"        // QMD_STATE
	KeyReason      = "reason"       // QMD_REASON
	KeyError       = "error"        // QMD_ERROR (zap.Error uses this key)
)

// Partition names the partition a line is about.
func Partition(name string) zap.Field { return zap.String(KeyPartition, name) }

// Event marks a line as the journal record of an incident of type t. The
// journald core adds the MESSAGE_ID of t, so `journalctl -x` shows the
// catalog entry.
func Event(t incident.Type) zap.Field { return zap.String(KeyEvent, string(t)) }

// ContainerID is the Podman container ID of the partition.
func ContainerID(id string) zap.Field { return zap.String(KeyContainerID, id) }

// IncidentID is the store-assigned ID of an incident.
func IncidentID(id uint64) zap.Field { return zap.Uint64(KeyIncidentID, id) }

// State is a partition state (running, throttled, failed, ...).
func State(s string) zap.Field { return zap.String(KeyState, s) }

// Reason says why qmd acted.
func Reason(s string) zap.Field { return zap.String(KeyReason, s) }

// IncidentFields returns the fields that identify inc in the journal:
// partition, event (hence MESSAGE_ID) and incident_id (when assigned).
// Details are added as further fields, keyed by their own names.
func IncidentFields(inc incident.Incident) []zap.Field {
	fs := make([]zap.Field, 0, 3+len(inc.Details))
	fs = append(fs, Partition(inc.Partition), Event(inc.Type))
	if inc.ID != 0 {
		fs = append(fs, IncidentID(inc.ID))
	}
	for k, v := range inc.Details {
		switch k {
		case KeyPartition, KeyEvent, KeyIncidentID:
			k = "detail_" + k // never shadow the identifying fields
		}
		fs = append(fs, zap.String(k, v))
	}
	return fs
}

// Journal field names: [A-Z0-9_], not starting with '_' or a digit, at
// most 64 bytes (systemd's journal_field_valid).
const (
	fieldPrefix  = "QMD_"
	maxFieldName = 64
)

// FieldName maps a zap field key to the journal field name qmd uses for
// it: "QMD_" + key upper-cased, with every byte outside [A-Z0-9_]
// replaced by '_', cut to 64 bytes. "container_id" -> "QMD_CONTAINER_ID".
func FieldName(key string) string {
	return string(appendFieldName(make([]byte, 0, len(fieldPrefix)+len(key)), fieldPrefix, key))
}

// appendFieldName appends the sanitised name prefix+key to b. prefix must
// already be a valid field name prefix (it starts with "QMD_").
func appendFieldName(b []byte, prefix, key string) []byte {
	start := len(b)
	b = append(b, prefix...)
	for i := 0; i < len(key) && len(b)-start < maxFieldName; i++ {
		c := key[i]
		switch {
		case c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		default:
			c = '_'
		}
		b = append(b, c)
	}
	if len(b)-start > maxFieldName {
		b = b[:start+maxFieldName]
	}
	return b
}

// validFieldName reports whether name is acceptable to journald as a
// field sent by a client.
func validFieldName(name []byte) bool {
	if len(name) == 0 || len(name) > maxFieldName || name[0] == '_' || (name[0] >= '0' && name[0] <= '9') {
		return false
	}
	for _, c := range name {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}
