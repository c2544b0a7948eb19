// Package seedwire is the push protocol of the Java metadata service this
// project replaces, as its storage services receive it: the JSON of a
// MetadataUpdateRequest posted to {storageUrl}/api/v1/storage/metadata and
// of the MetadataUpdateResponse they answer, and the translation of one of
// our pushes (a full state or a delta) into the sequence of typed updates
// that brings such a receiver to the same view.
//
// It is part of the deterministic core (the node translates, the simulator
// replays): no I/O, no clock, no goroutines, no randomness, no map ranging
// whose order could reach an output. It must never import the node, the
// RPC layer or storage; it knows the generated types only.
package seedwire
