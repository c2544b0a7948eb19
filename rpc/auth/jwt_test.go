package auth_test

import (
	"testing"
	"time"

	"github.com/dmq-project/metadata/rpc/auth"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sign makes an HS256 token with exactly the claims given.
func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	token, err := jwt.NewWithClaims(method, claims).SignedString(key)
	require.NoError(t, err)
	return token
}

// The JWT findings of an operator's review, each refused (or accepted)
// with a reason that says what is wrong.
func TestJWTValidation(t *testing.T) {
	a := authenticator(t)
	now := time.Now()
	admin := func(extra jwt.MapClaims) jwt.MapClaims {
		claims := jwt.MapClaims{"sub": "ops", "role": "ADMIN"}
		for k, v := range extra {
			claims[k] = v
		}
		return claims
	}
	hour := now.Add(time.Hour).Unix()

	p, err := a.Authenticate("Bearer " + sign(t, jwt.SigningMethodHS256, jwtSecret, admin(jwt.MapClaims{"exp": hour})))
	require.NoError(t, err)
	assert.Equal(t, auth.RoleAdmin, p.Role)
	assert.Equal(t, "ops", p.Name)

	_, err = a.Authenticate("Bearer " + sign(t, jwt.SigningMethodHS256, jwtSecret, admin(nil)))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no exp claim", "a token without exp was refused as expired, which it is not")

	_, err = a.Authenticate("Bearer " + sign(t, jwt.SigningMethodHS256, jwtSecret, admin(jwt.MapClaims{"exp": now.Add(-time.Hour).Unix()})))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "expired at")

	_, err = a.Authenticate("Bearer " + sign(t, jwt.SigningMethodHS256, jwtSecret,
		admin(jwt.MapClaims{"exp": hour, "nbf": now.Add(10 * time.Minute).Unix()})))
	require.Error(t, err, "a token not valid before ten minutes from now was accepted")
	assert.Contains(t, err.Error(), "not valid before")
	_, err = a.Authenticate("Bearer " + sign(t, jwt.SigningMethodHS256, jwtSecret,
		admin(jwt.MapClaims{"exp": hour, "nbf": now.Add(5 * time.Second).Unix()})))
	assert.NoError(t, err, "a few seconds of clock skew are tolerated")

	_, err = a.Authenticate("Bearer " + sign(t, jwt.SigningMethodHS256, []byte("another-secret-of-at-least-32-bytes"), admin(jwt.MapClaims{"exp": hour})))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "signature")

	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, admin(jwt.MapClaims{"exp": hour}))
	_, err = a.Authenticate("Bearer " + none)
	assert.Error(t, err, "an unsigned token (alg none) was accepted")

	// The scheme is case-insensitive (RFC 9110 §11.1).
	for _, scheme := range []string{"bearer", "BEARER", "Bearer"} {
		p, err := a.Authenticate(scheme + " " + adminToken)
		require.NoError(t, err, "scheme %q", scheme)
		assert.Equal(t, auth.RoleAdmin, p.Role)
	}
	_, err = a.Authenticate("Basic " + adminToken)
	assert.Error(t, err)
}

// An HS256 secret shorter than the hash (32 bytes) is refused at start: a
// three-character secret was accepted, and can be brute-forced from any
// token signed with it.
func TestShortJWTSecretIsRefused(t *testing.T) {
	_, err := auth.NewAuthenticator("", []byte("abc"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "at least 32")
	_, err = auth.NewAuthenticator("", make([]byte, 32))
	assert.NoError(t, err)
}

// With an issuer and an audience configured, a token minted with the same
// secret for another service (another iss, or not for us) is refused, and
// says which claim is wrong; a token without the claims too.
func TestJWTIssuerAndAudience(t *testing.T) {
	a := authenticator(t)
	hour := time.Now().Add(time.Hour).Unix()
	token := func(extra jwt.MapClaims) string {
		claims := jwt.MapClaims{"sub": "ops", "role": "ADMIN", "exp": hour}
		for k, v := range extra {
			claims[k] = v
		}
		return "Bearer " + sign(t, jwt.SigningMethodHS256, jwtSecret, claims)
	}
	_, err := a.Authenticate(token(jwt.MapClaims{"iss": "elsewhere"}))
	require.NoError(t, err, "without configured claims, iss and aud are not checked")

	a.RequireJWTClaims("https://idp.example", "dmq-metadata")
	_, err = a.Authenticate(token(jwt.MapClaims{"iss": "https://idp.example", "aud": []string{"other", "dmq-metadata"}}))
	assert.NoError(t, err)
	for name, claims := range map[string]jwt.MapClaims{
		"issuer":            {"iss": "https://evil.example", "aud": "dmq-metadata"},
		"issuer is \"\"":    {"aud": "dmq-metadata"},
		"audience":          {"iss": "https://idp.example", "aud": "billing"},
		"audience is []":    {"iss": "https://idp.example"},
		"audience is [\"\"": {"iss": "https://idp.example", "aud": ""},
	} {
		_, err := a.Authenticate(token(claims))
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), "the token's "+name, name)
	}
}
