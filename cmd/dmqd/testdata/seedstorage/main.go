// Command seedstorage stands in for a storage service of the Java system
// this project replaces, written only from that system's contract (its
// REST paths and JSON field names), never from this project's code: it
// shares no package with the controller. It finds the controller with
// GET /api/v1/metadata/controller on each metadata service in turn, pulls
// GET /api/v1/metadata/cluster, registers, heartbeats with
// POST /api/v1/metadata/heartbeat/{id} and no body, and applies the
// MetadataUpdateRequests posted to /api/v1/storage/metadata as the seed's
// receiver does. GET /view shows what it holds, for the test.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

type brokerInfo struct {
	ID    int32  `json:"id"`
	Host  string `json:"host"`
	Port  int32  `json:"port"`
	Alive bool   `json:"alive"`
}

type partitionInfo struct {
	Topic       string  `json:"topic"`
	Partition   int32   `json:"partition"`
	LeaderID    int32   `json:"leaderId"`
	FollowerIDs []int32 `json:"followerIds"`
	ISRIDs      []int32 `json:"isrIds"`
	LeaderEpoch int64   `json:"leaderEpoch"`
}

type updateRequest struct {
	UpdateType     string          `json:"updateType"`
	Version        *int64          `json:"version"`
	Brokers        []brokerInfo    `json:"brokers"`
	Partitions     []partitionInfo `json:"partitions"`
	DeletedTopics  []string        `json:"deletedTopics"`
	ControllerID   *int32          `json:"controllerId"`
	ControllerURL  *string         `json:"controllerUrl"`
	ControllerTerm int64           `json:"controllerTerm"`
	Timestamp      int64           `json:"timestamp"`
}

// view is what the service holds; GET /view returns it.
type view struct {
	Version        int64                    `json:"version"`
	Brokers        map[int32]brokerInfo     `json:"brokers"`
	Partitions     map[string]partitionInfo `json:"partitions"`
	ControllerID   int32                    `json:"controllerId"`
	ControllerURL  string                   `json:"controllerUrl"`
	ControllerTerm int64                    `json:"controllerTerm"`
	Pushes         int                      `json:"pushes"`
	Types          map[string]int           `json:"types"`
	Registered     bool                     `json:"registered"`
	Heartbeats     int                      `json:"heartbeats"`
}

type service struct {
	id       int32
	host     string
	port     int32
	metadata []string
	client   *http.Client

	mu sync.Mutex
	v  view
}

func key(topic string, partition int32) string { return topic + "-" + strconv.Itoa(int(partition)) }

func (s *service) apply(u updateRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.v.Pushes++
	s.v.Types[u.UpdateType]++
	if u.Version != nil {
		s.v.Version = *u.Version
	}
	for _, b := range u.Brokers {
		s.v.Brokers[b.ID] = b
	}
	switch u.UpdateType {
	case "FULL_SNAPSHOT", "":
		s.v.Partitions = map[string]partitionInfo{}
		for _, p := range u.Partitions {
			if p.FollowerIDs == nil || p.ISRIDs == nil {
				panic("null followers or ISR in a full snapshot") // the seed's receiver fails here too
			}
			s.v.Partitions[key(p.Topic, p.Partition)] = p
		}
	case "TOPIC_CREATED":
		for _, p := range u.Partitions {
			if _, ok := s.v.Partitions[key(p.Topic, p.Partition)]; !ok {
				s.v.Partitions[key(p.Topic, p.Partition)] = p
			}
		}
	case "TOPIC_DELETED":
		for _, topic := range u.DeletedTopics {
			for k := range s.v.Partitions {
				if strings.HasPrefix(k, topic+"-") {
					delete(s.v.Partitions, k)
				}
			}
		}
	case "LEADER_UPDATE":
		for _, p := range u.Partitions {
			held, ok := s.v.Partitions[key(p.Topic, p.Partition)]
			if !ok {
				continue
			}
			held.LeaderID, held.LeaderEpoch = p.LeaderID, p.LeaderEpoch
			if p.FollowerIDs != nil {
				held.FollowerIDs = p.FollowerIDs
			}
			if p.ISRIDs != nil {
				held.ISRIDs = p.ISRIDs
			}
			s.v.Partitions[key(p.Topic, p.Partition)] = held
		}
	case "ISR_UPDATE":
		for _, p := range u.Partitions {
			if held, ok := s.v.Partitions[key(p.Topic, p.Partition)]; ok {
				held.ISRIDs = p.ISRIDs
				s.v.Partitions[key(p.Topic, p.Partition)] = held
			}
		}
	case "CONTROLLER_CHANGED":
		if u.ControllerID != nil && u.ControllerURL != nil {
			s.v.ControllerID, s.v.ControllerURL, s.v.ControllerTerm = *u.ControllerID, *u.ControllerURL, u.ControllerTerm
		}
	}
}

func (s *service) receive(w http.ResponseWriter, r *http.Request) {
	var u updateRequest
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewDecoder(r.Body).Decode(&u); err != nil {
		_ = json.NewEncoder(w).Encode(map[string]any{"success": false, "errorCode": "INVALID_REQUEST", "errorMessage": err.Error()})
		return
	}
	s.apply(u)
	_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "errorCode": "NONE",
		"processedTimestamp": time.Now().UnixMilli(), "brokerId": s.id})
}

func (s *service) controllerURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.v.ControllerURL
}

// discover asks each metadata service in list order who the controller
// is, and takes the first answer that names one.
func (s *service) discover() bool {
	for _, base := range s.metadata {
		resp, err := s.client.Get(base + "/api/v1/metadata/controller")
		if err != nil {
			continue
		}
		var info struct {
			ControllerID   *int32 `json:"controllerId"`
			ControllerURL  string `json:"controllerUrl"`
			ControllerTerm int64  `json:"controllerTerm"`
		}
		err = json.NewDecoder(resp.Body).Decode(&info)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || info.ControllerID == nil {
			continue
		}
		s.mu.Lock()
		s.v.ControllerID, s.v.ControllerURL, s.v.ControllerTerm = *info.ControllerID, info.ControllerURL, info.ControllerTerm
		s.mu.Unlock()
		return true
	}
	return false
}

// pull reads GET /cluster as the seed's storage services parse it: an
// untyped map.
func (s *service) pull() error {
	resp, err := s.client.Get(s.controllerURL() + "/api/v1/metadata/cluster")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /cluster: HTTP %d", resp.StatusCode)
	}
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return err
	}
	number := func(x any) int64 { return int64(x.(float64)) } // a string here would be a ClassCastException
	v := view{Brokers: map[int32]brokerInfo{}, Partitions: map[string]partitionInfo{}}
	v.Version = number(m["version"])
	for _, b := range m["brokers"].([]any) {
		b := b.(map[string]any)
		alive, ok := b["alive"].(bool)
		if !ok {
			alive = true
		}
		v.Brokers[int32(number(b["id"]))] = brokerInfo{ID: int32(number(b["id"])), Host: b["host"].(string), Port: int32(number(b["port"])), Alive: alive}
	}
	for _, t := range m["topics"].([]any) {
		for _, p := range t.(map[string]any)["partitions"].([]any) {
			p := p.(map[string]any)
			leader := int32(number(p["leader"].(map[string]any)["brokerId"]))
			info := partitionInfo{Topic: p["topicName"].(string), Partition: int32(number(p["partitionId"])), LeaderID: leader,
				FollowerIDs: []int32{}, ISRIDs: []int32{}, LeaderEpoch: number(p["leaderEpoch"])}
			for _, r := range p["replicas"].([]any) {
				if id := int32(number(r.(map[string]any)["brokerId"])); id != leader {
					info.FollowerIDs = append(info.FollowerIDs, id)
				}
			}
			for _, r := range p["isr"].([]any) {
				info.ISRIDs = append(info.ISRIDs, int32(number(r.(map[string]any)["brokerId"])))
			}
			v.Partitions[key(info.Topic, info.Partition)] = info
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v.ControllerID, v.ControllerURL, v.ControllerTerm = s.v.ControllerID, s.v.ControllerURL, s.v.ControllerTerm
	v.Pushes, v.Types, v.Registered, v.Heartbeats = s.v.Pushes, s.v.Types, s.v.Registered, s.v.Heartbeats
	s.v = v
	return nil
}

func (s *service) register() error {
	body, _ := json.Marshal(map[string]any{"id": s.id, "host": s.host, "port": s.port, "rack": "default"})
	resp, err := s.client.Post(s.controllerURL()+"/api/v1/metadata/brokers", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 || len(data) == 0 {
		return fmt.Errorf("register: HTTP %d %s", resp.StatusCode, data)
	}
	s.mu.Lock()
	s.v.Registered = true
	s.mu.Unlock()
	return nil
}

func (s *service) heartbeat() error {
	resp, err := s.client.Post(fmt.Sprintf("%s/api/v1/metadata/heartbeat/%d", s.controllerURL(), s.id), "application/json", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("heartbeat: HTTP %d (X-Controller-Leader %q)", resp.StatusCode, resp.Header.Get("X-Controller-Leader"))
	}
	var answer struct {
		MetadataVersion *int64 `json:"metadataVersion"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil || answer.MetadataVersion == nil {
		return fmt.Errorf("heartbeat: no metadataVersion in the answer (%v)", err)
	}
	s.mu.Lock()
	s.v.Heartbeats++
	s.mu.Unlock()
	return nil
}

func (s *service) run(interval time.Duration) {
	for !s.discover() {
		time.Sleep(interval)
	}
	for s.pull() != nil {
		time.Sleep(interval)
		s.discover()
	}
	for s.register() != nil {
		time.Sleep(interval)
		s.discover()
	}
	failures := 0
	for {
		time.Sleep(interval)
		if err := s.heartbeat(); err != nil {
			log.Print(err)
			if failures++; failures >= 3 {
				s.discover()
				failures = 0
			}
			continue
		}
		failures = 0
	}
}

func main() {
	id := flag.Int("id", 1, "broker id")
	listen := flag.String("listen", "127.0.0.1:0", "address to receive pushes on")
	metadata := flag.String("metadata", "", "metadata service URLs, comma-separated, in services.json order")
	interval := flag.Duration("heartbeat-interval", 300*time.Millisecond, "heartbeat interval")
	flag.Parse()
	host, port, _ := strings.Cut(*listen, ":")
	portNumber, _ := strconv.Atoi(port)
	s := &service{id: int32(*id), host: host, port: int32(portNumber), metadata: strings.Split(*metadata, ","),
		client: &http.Client{Timeout: 5 * time.Second},
		v:      view{Brokers: map[int32]brokerInfo{}, Partitions: map[string]partitionInfo{}, Types: map[string]int{}}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/storage/metadata", s.receive)
	mux.HandleFunc("GET /view", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.v)
	})
	go s.run(*interval)
	log.Fatal(http.ListenAndServe(*listen, mux))
}
