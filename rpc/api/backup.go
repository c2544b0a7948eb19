package api

import (
	"context"
	"net/http"
	"strconv"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/statemachine"
)

// BackupPath serves a consistent backup of the metadata (node.Backup, as
// a file): `dmqctl snapshot save` downloads it, `dmqd restore` founds a
// new cluster from it.
const BackupPath = "/api/v1/metadata/quorum/snapshot/data"

// BackupIndexHeader names the index of the backup served.
const BackupIndexHeader = "Dmq-Backup-Index"

// backup takes a backup after a linearizable read: it holds every write
// acknowledged before it was asked for, whichever controller serves it.
func (s *Server) backup(ctx context.Context) (node.Backup, error) {
	r, err := callNode(s, ctx, func(n *node.Node, done func(result[node.Backup])) {
		n.Read(func(_ *statemachine.StateMachine, err *statemachine.Error) {
			if err != nil {
				done(result[node.Backup]{err: err, leaderID: n.Leader(), leaderURL: n.PeerURL(n.Leader())})
				return
			}
			n.TakeBackup(func(b node.Backup, berr error) {
				if berr != nil {
					done(result[node.Backup]{err: &statemachine.Error{Code: metadatav1.ErrorCode_UNAVAILABLE, Message: "backup failed: " + berr.Error()}})
					return
				}
				done(result[node.Backup]{value: b})
			})
		})
	})
	return r.value, err
}

// BackupHandler serves GET BackupPath: the backup file, its index in
// BackupIndexHeader. The caller wraps it in the admin check.
func BackupHandler(s *Server) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		b, err := s.backup(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		file := b.Encode()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(file)))
		w.Header().Set(BackupIndexHeader, strconv.FormatUint(b.Index, 10))
		_, _ = w.Write(file)
	})
}
