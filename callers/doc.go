// Package callers knows who calls the gateway and what they may do and
// use: the caller id of each stream (from the mesh's client identity, a
// metadata key or the peer address, in a configured order), an optional
// access policy file (callers per RPC and model pattern, re-read when it
// changes), per-caller quotas (concurrent streams, characters and audio
// seconds per minute, shared by the replicas through package fleet), and
// usage counters by caller and model in billing units, with a bounded
// number of label values.
//
// It does not speak gRPC statuses: it returns *DeniedError and
// *QuotaError, which package service maps. Identity headers are only as
// trustworthy as the proxy that sets them; docs/operations.md says when
// each source can be trusted.
//
// All methods of Gate and Stream may be called concurrently.
package callers
