// Package client is a small client of the control plane API, used by the
// cagent control subcommands.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// DefaultURL is used when neither the flag nor CAGENT_URL is set.
const DefaultURL = "http://127.0.0.1:8090"

// Client calls the API with one token.
type Client struct {
	URL   string
	Token string
	HTTP  *http.Client
}

// FromEnv fills empty URL and Token from CAGENT_URL and CAGENT_TOKEN.
func (c *Client) FromEnv() {
	if c.URL == "" {
		c.URL = os.Getenv("CAGENT_URL")
	}
	if c.URL == "" {
		c.URL = DefaultURL
	}
	if c.Token == "" {
		c.Token = os.Getenv("CAGENT_TOKEN")
	}
}

// Error is an API error answer.
type Error struct {
	Status    int
	Code      string `json:"error"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
	Field     string `json:"field"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("%d %s: %s (request %s)", e.Status, e.Code, e.Message, e.RequestID)
}

// Do sends a request with a JSON body (unless nil) and returns the response
// body, or an *Error for 4xx and 5xx answers.
func (c *Client) Do(ctx context.Context, method, path string, body any) ([]byte, error) {
	if c.Token == "" {
		return nil, errors.New("no token: use --token or CAGENT_TOKEN")
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.URL, "/")+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	res, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 32<<20))
	if err != nil {
		return nil, err
	}
	if res.StatusCode >= 400 {
		e := &Error{Status: res.StatusCode}
		if json.Unmarshal(b, e) != nil || e.Code == "" {
			e.Code, e.Message = "http_error", res.Status
		}
		if e.RequestID == "" {
			e.RequestID = res.Header.Get("X-Request-Id")
		}
		return nil, fmt.Errorf("%s %s: %w", method, path, e)
	}
	return b, nil
}

// TenantPath returns /api/v1/tenants/<tenant>; with tenant "" it asks
// whoami for the token's own tenant.
func (c *Client) TenantPath(ctx context.Context, tenant string) (string, error) {
	if tenant == "" {
		b, err := c.Do(ctx, http.MethodGet, "/api/v1/whoami", nil)
		if err != nil {
			return "", err
		}
		var w struct {
			TenantID string `json:"tenant_id"`
		}
		if err := json.Unmarshal(b, &w); err != nil {
			return "", err
		}
		if w.TenantID == "" {
			return "", errors.New("--tenant is required with a superadmin token")
		}
		tenant = w.TenantID
	}
	return "/api/v1/tenants/" + url.PathEscape(tenant), nil
}
