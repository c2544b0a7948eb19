package rpc

// TrustForwarded is trustForwarded, for the external tests.
var TrustForwarded = trustForwarded
