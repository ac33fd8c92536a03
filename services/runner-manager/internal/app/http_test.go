package app_test

import "net/http"

func httpGet(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	// Only the status matters.
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}
