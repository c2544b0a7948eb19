// Package push is a controller's client of the storage services' push
// endpoints: Pusher delivers the pushes the node decides on, at the URL
// services.json gives for each broker id, in the protocol it names there
// (StorageSyncService over Connect, or the Java service's JSON updates
// that package seedwire defines), with a bound on pushes in flight and a
// timeout on each, and reports every outcome back to the node on its
// goroutine.
//
// What this package must never do: decide what to push, to whom or when
// (the node does), retry on its own, block the node, or drop an outcome
// (the node sends a broker no new push until it hears how the last ended).
package push
