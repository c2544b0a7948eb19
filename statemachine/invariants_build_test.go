//go:build invariants

package statemachine

import (
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/stretchr/testify/require"
)

// In an invariants build, the first Apply after the state broke an
// invariant panics and names the record's index, instead of running on
// with a state that the simulator alone would have caught.
func TestInvariantsBuildChecksEveryApply(t *testing.T) {
	sm := New()
	sm.Apply(1, &metadatav1.Record{Body: &metadatav1.Record_RegisterBroker{RegisterBroker: &metadatav1.RegisterBrokerRecord{
		BrokerId: 1, Host: "storage-1", Port: 9092, IncarnationId: "a"}}})
	require.NoError(t, sm.CheckInvariants())
	sm.brokers[1].epoch = 99 // past the applied index: no record could have done it
	panicked := func() (value any) {
		defer func() { value = recover() }()
		sm.Apply(2, &metadatav1.Record{Body: &metadatav1.Record_NoOp{NoOp: &metadatav1.NoOpRecord{}}})
		return nil
	}()
	require.NotNil(t, panicked, "the broken invariant went unnoticed")
	require.Contains(t, panicked, "invariant broken by the record at index 2")
	require.Contains(t, panicked, "broker 1 has epoch 99 outside (0, 2]")
}
