package auth_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/dmq-project/metadata/rpc/auth"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	adminToken      = "admin-token-0123456789"
	controllerToken = "controller-token-0123456789"
	peerToken       = "peer-token-of-this-cluster-0123"
)

var jwtSecret = []byte("a-secret-of-at-least-32-bytes-long!!")

// authenticator knows an ADMIN and a CONTROLLER token from its tokens
// file, and JWTs signed with jwtSecret.
func authenticator(t *testing.T) *auth.Authenticator {
	path := filepath.Join(t.TempDir(), "tokens.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"tokens":[
  {"token":"`+adminToken+`","name":"ops","role":"ADMIN"},
  {"token":"`+controllerToken+`","name":"controllers","role":"CONTROLLER"}]}`), 0o600))
	a, err := auth.NewAuthenticator(path, jwtSecret)
	require.NoError(t, err)
	return a
}

// TestJWTCannotNameAController: a JWT claiming the CONTROLLER role does
// not verify, with an error that says why: whoever holds the JWT secret
// (an identity provider, a tool minting client tokens) must not be able
// to mint controllers.
func TestJWTCannotNameAController(t *testing.T) {
	a := authenticator(t)
	token := auth.SignJWT(jwtSecret, auth.Principal{Name: "mallory", Role: auth.RoleController}, time.Now().Add(time.Hour))
	_, err := a.Authenticate("Bearer " + token)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "CONTROLLER")
	p, err := a.Authenticate("Bearer " + controllerToken)
	require.NoError(t, err, "a CONTROLLER token of the tokens file still names a controller")
	assert.Equal(t, auth.RoleController, p.Role)
}

// TestAuthenticateController: the Raft transport takes the peer token or
// a CONTROLLER token of the tokens file; the Connect code of each refusal
// tells a stranger (Unauthenticated) from a client of another role
// (PermissionDenied), and a JWT claiming the CONTROLLER role is told
// apart (ErrControllerJWT), as the transport counts each by reason.
func TestAuthenticateController(t *testing.T) {
	a := authenticator(t)
	p, err := a.AuthenticateController("Bearer "+peerToken, peerToken)
	require.NoError(t, err, "the peer token")
	assert.Equal(t, auth.RoleController, p.Role)
	p, err = a.AuthenticateController("Bearer "+controllerToken, peerToken)
	require.NoError(t, err, "a CONTROLLER token of the tokens file")
	assert.Equal(t, auth.RoleController, p.Role)

	jwtController := auth.SignJWT(jwtSecret, auth.Principal{Name: "mallory", Role: auth.RoleController}, time.Now().Add(time.Hour))
	_, err = a.AuthenticateController("Bearer "+jwtController, peerToken)
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err))
	assert.ErrorIs(t, err, auth.ErrControllerJWT)

	strangers := []struct{ name, header, peerToken string }{
		{"no token", "", peerToken},
		{"an unknown token", "Bearer not-a-token-of-anyone-0123", peerToken},
		{"the peer token when none is set", "Bearer " + peerToken, ""},
	}
	for _, tc := range strangers {
		_, err = a.AuthenticateController(tc.header, tc.peerToken)
		assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err), tc.name)
		assert.NotErrorIs(t, err, auth.ErrControllerJWT, tc.name)
	}

	_, err = a.AuthenticateController("Bearer "+adminToken, peerToken)
	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(err), "an admin is not a controller")
	adminJWT := auth.SignJWT(jwtSecret, auth.Principal{Name: "jwt-admin", Role: auth.RoleAdmin}, time.Now().Add(time.Hour))
	_, err = a.AuthenticateController("Bearer "+adminJWT, peerToken)
	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(err), "an admin JWT is not a controller")
}
