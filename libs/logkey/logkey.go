// Package logkey holds the slog attribute keys every service uses, so logs
// from all services can be joined on the same names (sloglint checks them).
package logkey

// Attribute keys. Values are snake_case and stable: dashboards and alerts
// match on them.
const (
	Resource  = "resource"
	SessionID = "session_id"
	ProjectID = "project_id"
	ObjectID  = "object_id"
	EventID   = "event_id"
	EventType = "event_type"
	Version   = "version"
	Subject   = "subject"
	Stream    = "stream"
	Consumer  = "consumer"
	Group     = "group"
	Member    = "member"
	// Owner is the member that owns a claim, logged by another member
	// (whose own id is its logger's Member).
	Owner     = "owner"
	Seq       = "seq"
	Attempt   = "attempt"
	Err       = "err"
	Phase     = "phase"
	Reason    = "reason"
	Addr      = "addr"
	Service   = "service"
	Instance  = "instance"
	PID       = "pid"
	Port      = "port"
	Namespace = "namespace"
	Name      = "name"
	Route     = "route"
	Status    = "status"
	Duration  = "duration"
	Count     = "count"
	FieldPath = "field_path"
	// Partitions is a consumer-group member's partition numbers.
	Partitions = "partitions"
)
