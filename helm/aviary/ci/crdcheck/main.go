// crdcheck validates the custom resources the aviary chart renders
// (ServiceMonitor, PrometheusRule, cert-manager Certificate) against the Go
// API types of their operators, which kubernetes-validate has no schemas for.
//
// Input: a JSON array of objects (deploy/dev/chart-check.sh extracts them from
// `helm template` output). Each object is decoded strictly into its type, so
// an unknown or misspelt field and a wrongly typed value fail; then the fields
// the operators require are checked. Exit status 1 lists every problem.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	monv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
)

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

func strict(raw []byte, into any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(into)
}

func check(raw json.RawMessage) (string, []string) {
	var tm typeMeta
	if err := json.Unmarshal(raw, &tm); err != nil {
		return "?", []string{err.Error()}
	}
	id := fmt.Sprintf("%s %s/%s", tm.APIVersion, tm.Kind, tm.Metadata.Name)
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	switch tm.APIVersion + " " + tm.Kind {
	case "monitoring.coreos.com/v1 ServiceMonitor":
		var o monv1.ServiceMonitor
		if err := strict(raw, &o); err != nil {
			return id, []string{err.Error()}
		}
		if len(o.Spec.Endpoints) == 0 {
			bad("spec.endpoints is empty")
		}
		if len(o.Spec.Selector.MatchLabels) == 0 && len(o.Spec.Selector.MatchExpressions) == 0 {
			bad("spec.selector selects every Service")
		}
		for i, e := range o.Spec.Endpoints {
			if e.Port == "" && e.TargetPort == nil {
				bad("spec.endpoints[%d] names no port", i)
			}
		}
	case "monitoring.coreos.com/v1 PrometheusRule":
		var o monv1.PrometheusRule
		if err := strict(raw, &o); err != nil {
			return id, []string{err.Error()}
		}
		if len(o.Spec.Groups) == 0 {
			bad("spec.groups is empty")
		}
		for _, g := range o.Spec.Groups {
			if g.Name == "" {
				bad("a group has no name")
			}
			for j, r := range g.Rules {
				if (r.Alert == "") == (r.Record == "") {
					bad("group %s rule %d: set exactly one of alert and record", g.Name, j)
				}
				if strings.TrimSpace(r.Expr.String()) == "" {
					bad("group %s rule %d (%s): empty expr", g.Name, j, r.Alert)
				}
			}
		}
	case "cert-manager.io/v1 Certificate":
		var o cmv1.Certificate
		if err := strict(raw, &o); err != nil {
			return id, []string{err.Error()}
		}
		if o.Spec.SecretName == "" {
			bad("spec.secretName is empty")
		}
		if o.Spec.IssuerRef.Name == "" {
			bad("spec.issuerRef.name is empty")
		}
		if len(o.Spec.DNSNames) == 0 && o.Spec.CommonName == "" {
			bad("no dnsNames and no commonName")
		}
		if pk := o.Spec.PrivateKey; pk != nil {
			switch pk.Algorithm {
			case "", cmv1.RSAKeyAlgorithm:
				if pk.Size != 0 && pk.Size < 2048 {
					bad("RSA key size %d < 2048", pk.Size)
				}
			case cmv1.ECDSAKeyAlgorithm:
				if pk.Size != 0 && pk.Size != 256 && pk.Size != 384 && pk.Size != 521 {
					bad("ECDSA key size %d is not 256, 384 or 521", pk.Size)
				}
			case cmv1.Ed25519KeyAlgorithm:
			default:
				bad("unknown privateKey.algorithm %q", pk.Algorithm)
			}
		}
	default:
		bad("no schema for this kind (add it to crdcheck or to kubernetes-validate's set)")
	}
	return id, errs
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: crdcheck OBJECTS.json")
		os.Exit(2)
	}
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var objs []json.RawMessage
	if err := json.Unmarshal(data, &objs); err != nil {
		fmt.Fprintln(os.Stderr, "crdcheck:", err)
		os.Exit(2)
	}
	failed := false
	for _, raw := range objs {
		id, errs := check(raw)
		if len(errs) == 0 {
			fmt.Printf("ok   %s\n", id)
			continue
		}
		failed = true
		for _, e := range errs {
			fmt.Printf("FAIL %s: %s\n", id, e)
		}
	}
	if failed {
		os.Exit(1)
	}
}
