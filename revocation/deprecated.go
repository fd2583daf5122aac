package revocation

import "time"

// Store is the former name of RevokedSet.
//
// Deprecated: use RevokedSet.
type Store = RevokedSet

// NewStore is the former name of NewRevokedSet.
//
// Deprecated: use NewRevokedSet.
func NewStore(now func() time.Time) *RevokedSet { return NewRevokedSet(now) }
