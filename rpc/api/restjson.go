package api

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// appendRESTJSON appends msg as the REST paths answer it: protojson's
// field names and values, default values and empty lists emitted, except
// that 64-bit integers are JSON numbers. protojson writes them as strings
// (JavaScript's numbers lose precision past 2^53), but the Java service
// this one replaces answered numbers, and its clients read some answers as
// untyped maps, where a string is not a Long; no version, epoch, id or
// millisecond time of this service comes near 2^53. Messages of the
// well-known types (google.protobuf.*) keep protojson's special forms.
func appendRESTJSON(b []byte, msg protoreflect.Message) ([]byte, error) {
	if strings.HasPrefix(string(msg.Descriptor().FullName()), "google.protobuf.") {
		data, err := protojson.MarshalOptions{EmitDefaultValues: true}.Marshal(msg.Interface())
		return append(b, data...), err
	}
	b = append(b, '{')
	fields := msg.Descriptor().Fields()
	first := true
	for i := range fields.Len() {
		fd := fields.Get(i)
		if (fd.HasPresence() || fd.ContainingOneof() != nil) && !msg.Has(fd) {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendJSONString(b, fd.JSONName())
		b = append(b, ':')
		var err error
		switch {
		case fd.IsList():
			list := msg.Get(fd).List()
			b = append(b, '[')
			for j := range list.Len() {
				if j > 0 {
					b = append(b, ',')
				}
				if b, err = appendRESTValue(b, fd, list.Get(j)); err != nil {
					return nil, err
				}
			}
			b = append(b, ']')
		case fd.IsMap():
			m := msg.Get(fd).Map()
			keys := make([]protoreflect.MapKey, 0, m.Len())
			m.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				keys = append(keys, k)
				return true
			})
			slices.SortFunc(keys, func(x, y protoreflect.MapKey) int { return strings.Compare(x.String(), y.String()) })
			b = append(b, '{')
			for j, k := range keys {
				if j > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, k.String())
				b = append(b, ':')
				if b, err = appendRESTValue(b, fd.MapValue(), m.Get(k)); err != nil {
					return nil, err
				}
			}
			b = append(b, '}')
		default:
			if b, err = appendRESTValue(b, fd, msg.Get(fd)); err != nil {
				return nil, err
			}
		}
	}
	return append(b, '}'), nil
}

func appendRESTValue(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) ([]byte, error) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return strconv.AppendBool(b, v.Bool()), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return strconv.AppendInt(b, v.Int(), 10), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return strconv.AppendUint(b, v.Uint(), 10), nil
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f := v.Float()
		switch {
		case math.IsNaN(f):
			return append(b, `"NaN"`...), nil
		case math.IsInf(f, 1):
			return append(b, `"Infinity"`...), nil
		case math.IsInf(f, -1):
			return append(b, `"-Infinity"`...), nil
		}
		bits := 64
		if fd.Kind() == protoreflect.FloatKind {
			bits = 32
		}
		return strconv.AppendFloat(b, f, 'g', -1, bits), nil
	case protoreflect.StringKind:
		return appendJSONString(b, v.String()), nil
	case protoreflect.BytesKind:
		return appendJSONString(b, base64.StdEncoding.EncodeToString(v.Bytes())), nil
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return appendJSONString(b, string(ev.Name())), nil
		}
		return strconv.AppendInt(b, int64(v.Enum()), 10), nil
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return appendRESTJSON(b, v.Message())
	}
	return b, nil
}

func appendJSONString(b []byte, s string) []byte {
	data, _ := json.Marshal(s) // a string always marshals
	return append(b, data...)
}

// marshalREST is appendRESTJSON for a whole message.
func marshalREST(base []byte, msg proto.Message) ([]byte, error) {
	return appendRESTJSON(base, msg.ProtoReflect())
}
