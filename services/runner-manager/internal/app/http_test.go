package app_test

import (
	"context"
	"net/http"
	"time"
)

func httpGet(url string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	// Only the status matters.
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}
