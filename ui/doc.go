// Package ui is the web console every controller serves at /ui/: plain
// HTML, CSS and ES modules embedded in the binary (no build step, no
// request leaves the controller), which talk to the controller's own
// Connect API with JSON and follow the metadata over WatchMetadata's
// streaming JSON framing.
//
// What it must never do: reach a CDN or any other host, keep a bearer
// token anywhere but in the page's memory, or decide anything the API
// does not (every action is an API call, authorised by the server).
package ui
