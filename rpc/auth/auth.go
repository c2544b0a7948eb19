package auth

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/statemachine"
	"github.com/golang-jwt/jwt/v5"
)

// Role is what a principal may do.
type Role string

const (
	// RoleAdmin manages topics, brokers and the quorum.
	RoleAdmin Role = "ADMIN"
	// RoleService is a storage service: heartbeats, AlterPartition and the
	// registration of its own broker id only.
	RoleService Role = "SERVICE"
	// RoleProducer and RoleConsumer read metadata.
	RoleProducer Role = "PRODUCER"
	RoleConsumer Role = "CONSUMER"
	// RoleController is a peer controller: the Raft transport, and
	// nothing else. It comes only from the peer token (security.peer-token),
	// a CONTROLLER entry of the tokens file, or, under TLS, the cluster's
	// certificate; never from a JWT, which anyone holding the JWT secret
	// (an identity provider, a tool minting client tokens) can sign.
	RoleController Role = "CONTROLLER"
)

// Principal is an authenticated caller.
type Principal struct {
	Name     string `json:"name"`
	Role     Role   `json:"role"`
	BrokerID int32  `json:"brokerId,omitempty"`
	// viaJWT: the principal comes from a JWT, which never names a
	// controller (checked again where controllers are admitted).
	viaJWT bool
}

// Authenticator checks bearer tokens: static tokens from a file, and JWTs
// signed with HS256 under a shared secret (claims sub, role, broker_id,
// exp). A nil *Authenticator means authentication is off.
type Authenticator struct {
	static    map[string]Principal
	jwtSecret []byte
	// jwtIssuer and jwtAudience, when set, must be a JWT's iss and one of
	// its aud: a token minted for another service with the same secret is
	// refused.
	jwtIssuer, jwtAudience string
	now                    func() time.Time
}

// RequireJWTClaims makes every JWT name issuer as its iss and audience
// among its aud (each only when not empty).
func (a *Authenticator) RequireJWTClaims(issuer, audience string) {
	a.jwtIssuer, a.jwtAudience = issuer, audience
}

// TokensFile is the static tokens file: {"tokens":[{"token","name","role","brokerId"}]}.
type TokensFile struct {
	Tokens []struct {
		Token string `json:"token"`
		Principal
	} `json:"tokens"`
}

// NewAuthenticator loads the tokens file (may be empty) and the JWT secret
// (may be empty); with neither, it returns nil: authentication off.
func NewAuthenticator(tokensPath string, jwtSecret []byte) (*Authenticator, error) {
	if tokensPath == "" && len(jwtSecret) == 0 {
		return nil, nil
	}
	if len(jwtSecret) > 0 && len(jwtSecret) < JWTSecretMinBytes {
		return nil, fmt.Errorf("the JWT secret is %d bytes: HS256 needs at least %d (RFC 7518 §3.2: a key as long as the hash)",
			len(jwtSecret), JWTSecretMinBytes)
	}
	a := &Authenticator{static: map[string]Principal{}, jwtSecret: jwtSecret, now: time.Now}
	if tokensPath != "" {
		data, err := os.ReadFile(tokensPath)
		if err != nil {
			return nil, err
		}
		var f TokensFile
		decoder := json.NewDecoder(strings.NewReader(string(data)))
		decoder.DisallowUnknownFields()
		if err := decoder.Decode(&f); err != nil {
			return nil, fmt.Errorf("%s: %w", tokensPath, err)
		}
		for _, t := range f.Tokens {
			if len(t.Token) < 16 {
				return nil, fmt.Errorf("%s: the token of %q is shorter than 16 characters", tokensPath, t.Name)
			}
			if err := validRole(t.Role, t.BrokerID); err != nil {
				return nil, fmt.Errorf("%s: %q: %w", tokensPath, t.Name, err)
			}
			a.static[t.Token] = t.Principal
		}
	}
	return a, nil
}

func validRole(role Role, brokerID int32) error {
	switch role {
	case RoleAdmin, RoleProducer, RoleConsumer, RoleController:
		return nil
	case RoleService:
		if brokerID < statemachine.BrokerIDMin {
			return errors.New("a SERVICE principal needs its broker id")
		}
		return nil
	}
	return fmt.Errorf("unknown role %q", role)
}

var errNoToken = errors.New("no bearer token: send Authorization: Bearer <token>")

// JWTSecretMinBytes is the shortest HS256 secret accepted: as long as the
// SHA-256 output (RFC 7518 §3.2). A short secret can be brute-forced from
// any token signed with it.
const JWTSecretMinBytes = 32

// jwtLeeway is the clock skew tolerated on a JWT's exp and nbf.
const jwtLeeway = 30 * time.Second

// bearerToken returns the token of an Authorization header value. The
// scheme is case-insensitive (RFC 9110 §11.1): "bearer x" is "Bearer x".
func bearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimLeft(token, " ")
	return token, token != ""
}

// ErrControllerJWT refuses a JWT that claims the CONTROLLER role.
var ErrControllerJWT = errors.New("a JWT may not carry the CONTROLLER role: controllers authenticate with " +
	"the peer token (security.peer-token), a CONTROLLER token of the tokens file, or the cluster's certificate")

// Authenticate returns the principal of an Authorization header value.
func (a *Authenticator) Authenticate(header string) (Principal, error) {
	token, ok := bearerToken(header)
	if !ok {
		return Principal{}, errNoToken
	}
	if p, ok := a.static[token]; ok {
		return p, nil
	}
	if len(a.jwtSecret) > 0 && strings.Count(token, ".") == 2 {
		return a.verifyJWT(token)
	}
	return Principal{}, errors.New("unknown token")
}

// jwtClaims are the claims a JWT carries: sub, exp (required), nbf and
// iat (optional), role and broker_id.
type jwtClaims struct {
	Role     Role  `json:"role"`
	BrokerID int32 `json:"broker_id,omitempty"`
	jwt.RegisteredClaims
}

func (a *Authenticator) verifyJWT(token string) (Principal, error) {
	options := []jwt.ParserOption{jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(),
		jwt.WithLeeway(jwtLeeway), jwt.WithTimeFunc(a.now)}
	if a.jwtIssuer != "" {
		options = append(options, jwt.WithIssuer(a.jwtIssuer))
	}
	if a.jwtAudience != "" {
		options = append(options, jwt.WithAudience(a.jwtAudience))
	}
	var claims jwtClaims
	_, err := jwt.NewParser(options...).ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return a.jwtSecret, nil })
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && claims.ExpiresAt == nil:
		return Principal{}, errors.New("the token has no exp claim: every token must expire")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer) || (errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && claims.Issuer == "" && a.jwtIssuer != ""):
		return Principal{}, fmt.Errorf("the token's issuer is %q: this controller accepts %q", claims.Issuer, a.jwtIssuer)
	case errors.Is(err, jwt.ErrTokenInvalidAudience) || errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return Principal{}, fmt.Errorf("the token's audience is %q: this controller accepts %q", []string(claims.Audience), a.jwtAudience)
	case errors.Is(err, jwt.ErrTokenExpired):
		return Principal{}, fmt.Errorf("the token expired at %s", claims.ExpiresAt.UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return Principal{}, fmt.Errorf("the token is not valid before %s", claims.NotBefore.UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return Principal{}, errors.New("bad token signature")
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return Principal{}, fmt.Errorf("only HS256 tokens are accepted: %w", err)
	default:
		return Principal{}, fmt.Errorf("invalid token: %w", err)
	}
	if claims.Role == RoleController {
		return Principal{}, ErrControllerJWT
	}
	if err := validRole(claims.Role, claims.BrokerID); err != nil {
		return Principal{}, err
	}
	return Principal{Name: claims.Subject, Role: claims.Role, BrokerID: claims.BrokerID, viaJWT: true}, nil
}

// SignJWT makes an HS256 token (for tools and tests).
func SignJWT(secret []byte, p Principal, expires time.Time) string {
	claims := jwtClaims{Role: p.Role, BrokerID: p.BrokerID,
		RegisteredClaims: jwt.RegisteredClaims{Subject: p.Name, ExpiresAt: jwt.NewNumericDate(expires)}}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		panic(fmt.Sprintf("auth: signing a JWT: %v", err)) // HS256 with a []byte key cannot fail
	}
	return signed
}

type principalKey struct{}

// WithPrincipal returns ctx carrying the principal a caller authenticated
// as.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalOf is the principal the caller authenticated as, if any.
func PrincipalOf(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// PrincipalName is the name the caller authenticated as, if any.
func PrincipalName(ctx context.Context) string {
	if p, ok := PrincipalOf(ctx); ok {
		return p.Name
	}
	return ""
}

// Authorize says whether p may make the request: an ADMIN anything, a
// SERVICE its own heartbeats, registration and ISR changes and a session,
// any other client role the reads, and a CONTROLLER nothing of the API.
func Authorize(p Principal, procedure string, msg any) error {
	if p.Role == RoleAdmin {
		return nil
	}
	name := procedure[strings.LastIndex(procedure, "/")+1:]
	switch msg := msg.(type) {
	case *metadatav1.StorageHeartbeatRequest:
		id, err := statemachine.ParseServiceID(msg.GetServiceId())
		if p.Role == RoleService && err == nil && id == p.BrokerID {
			return nil
		}
	case *metadatav1.BrokerHeartbeatRequest:
		if p.Role == RoleService && msg.GetBrokerId() == p.BrokerID {
			return nil
		}
	case *metadatav1.RegisterBrokerRequest:
		if p.Role == RoleService && msg.GetId() == p.BrokerID {
			return nil
		}
	case *metadatav1.AlterPartitionRequest:
		if p.Role == RoleService && msg.GetBrokerId() == p.BrokerID {
			return nil
		}
	case *metadatav1.OpenSessionRequest:
		// Services write (registrations, ISR changes) and so need a
		// session; readers never write, so they may not fill the table.
		if p.Role == RoleService {
			return nil
		}
	default:
		if readOnlyProcedures[name] && p.Role != RoleController {
			return nil
		}
	}
	return fmt.Errorf("%s %q may not call %s", p.Role, p.Name, name)
}

// readOnlyProcedures are the calls any client role may make.
var readOnlyProcedures = map[string]bool{
	"ListBrokers": true, "DescribeBroker": true, "ListTopics": true, "DescribeTopic": true,
	"GetClusterMetadata": true, "WatchMetadata": true, "DescribeQuorum": true,
	"GetSeedClusterMetadata": true, "GetController": true,
	"DescribeConfigs": true, "ListPartitionReassignments": true, "DescribeBalance": true, "DescribeBrokerSessions": true,
}

// NewInterceptor authenticates every call of the API and authorises it
// by role (the Raft transport admits controllers only: see
// AuthenticateController).
//
// Calls whose authentication fails are limited per address
// (FailedAuthLimit): beyond it they are refused with ResourceExhausted,
// wrapping ErrAuthThrottled, and not audited. Unauthenticated calls have
// no principal to be rate-limited by, and would otherwise cost an audit
// line each. A valid token is never refused by this limit, whatever its
// address: callers behind one proxy or NAT are not locked out by another
// caller's bad token.
func NewInterceptor(a *Authenticator) connect.Interceptor {
	return authInterceptor{auth: a, failures: newLimiter(FailedAuthLimit)}
}

// FailedAuthLimit bounds the calls that fail authentication, per address.
var FailedAuthLimit = RateLimit{PerSecond: 5, Burst: 20}

// ErrAuthThrottled refuses a call from an address that failed
// authentication too often; the audit log does not record such calls (the
// refusals counted in metrics say how many).
var ErrAuthThrottled = errors.New("too many calls from this address failed authentication: check the token, and retry later")

type authInterceptor struct {
	auth     *Authenticator
	failures *limiter // a bucket per address, drawn from by failed authentications
}

func (i authInterceptor) check(ctx context.Context, peerAddr, header, procedure string, msg any) (context.Context, error) {
	address := peerAddr
	if host, _, err := net.SplitHostPort(peerAddr); err == nil {
		address = host
	}
	p, err := i.auth.Authenticate(header)
	if err != nil {
		if allowed, _ := i.failures.allow(address, time.Now()); !allowed {
			return ctx, connect.NewError(connect.CodeResourceExhausted, ErrAuthThrottled)
		}
		return ctx, connect.NewError(connect.CodeUnauthenticated, err)
	}
	if msg != nil {
		if err := Authorize(p, procedure, msg); err != nil {
			return ctx, connect.NewError(connect.CodePermissionDenied, err)
		}
	}
	return WithPrincipal(ctx, p), nil
}

func (i authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		ctx, err := i.check(ctx, req.Peer().Addr, req.Header().Get("Authorization"), req.Spec().Procedure, req.Any())
		if err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (i authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i authInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		// Streams are authorised on their procedure: WatchMetadata is a
		// read; the Raft transport takes controllers only.
		procedure := conn.Spec().Procedure
		ctx, err := i.check(ctx, conn.Peer().Addr, conn.RequestHeader().Get("Authorization"), procedure, nil)
		if err != nil {
			return err
		}
		p, _ := PrincipalOf(ctx)
		name := procedure[strings.LastIndex(procedure, "/")+1:]
		// A SERVICE may open a heartbeat stream; the handler checks that
		// each heartbeat is its own.
		serviceStream := p.Role == RoleService && name == "StorageHeartbeats"
		if p.Role != RoleAdmin && !serviceStream && (!readOnlyProcedures[name] || p.Role == RoleController) {
			return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s %q may not call %s", p.Role, p.Name, name))
		}
		return next(ctx, conn)
	}
}

// AuthenticateController returns the controller an Authorization header
// names, for the Raft transport: peerToken (this cluster's
// security.peer-token, which every controller presents; empty if not
// set), or a CONTROLLER token of the tokens file; never a JWT, which
// anyone holding the JWT secret can sign. The error is a *connect.Error:
// Unauthenticated for a missing or unknown token (wrapping
// ErrControllerJWT for a JWT claiming the CONTROLLER role),
// PermissionDenied for a valid token of another role.
func (a *Authenticator) AuthenticateController(header, peerToken string) (Principal, error) {
	token, ok := bearerToken(header)
	if !ok {
		return Principal{}, connect.NewError(connect.CodeUnauthenticated, errNoToken)
	}
	if peerToken != "" && subtle.ConstantTimeCompare([]byte(token), []byte(peerToken)) == 1 {
		return Principal{Name: "peer-token", Role: RoleController}, nil
	}
	p, err := a.Authenticate(header)
	if err != nil {
		return Principal{}, connect.NewError(connect.CodeUnauthenticated, err)
	}
	if p.Role != RoleController || p.viaJWT {
		return Principal{}, connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("%s %q is not a controller: the Raft transport takes controllers only", p.Role, p.Name))
	}
	return p, nil
}

// AdminOnly requires an ADMIN bearer token when a is set (nil:
// authentication is off, and next answers everyone).
func AdminOnly(a *Authenticator, next http.Handler) http.Handler {
	if a == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.Authenticate(r.Header.Get("Authorization"))
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusUnauthorized)
		case p.Role != RoleAdmin:
			http.Error(w, fmt.Sprintf("%s %q may not read profiles", p.Role, p.Name), http.StatusForbidden)
		default:
			next.ServeHTTP(w, r)
		}
	})
}
