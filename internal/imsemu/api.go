package imsemu

import (
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
)

// The Adobe API stand-in. Like the rest of this package it is a TEST DOUBLE: it lets a
// test or the demo go from "read a token from Vault" to "call an Adobe API with it"
// without reaching Adobe. It serves one route of Firefly Services,
//
//	POST /v3/images/generate   (normally at https://firefly-api.adobe.io)
//
// and does no more than check what adobe-ims.md says every Adobe API call carries:
// `Authorization: Bearer {access_token}` and `x-api-key: {client_id}`. It generates no
// image. The token is judged by this emulator's own bookkeeping (issued here, not
// invalidated, not expired by the Config clock), exactly as TokenValid judges it.

// APIPath is the path of the Adobe API stand-in, Firefly Services' image generation.
const APIPath = "/v3/images/generate"

// APIScope is the scope a token must carry for the API stand-in to accept it.
const APIScope = "firefly_api"

// Error codes of the API stand-in, in the API gateway's body
// {"error_code":"...","message":"..."}.
const (
	// APIErrorTokenInvalid (401) is documented in adobe-ims.md: "Oauth token is not valid".
	// The stand-in sends it for a missing, malformed, unknown, expired or invalidated token.
	APIErrorTokenInvalid = "401013"
	// APIErrorAPIKeyInvalid (403) is documented in adobe-ims.md: "Api Key is invalid".
	// The stand-in sends it for a missing x-api-key or one that is not the token's client ID.
	APIErrorAPIKeyInvalid = "403003"
	// APIErrorNotEntitled (403) is NOT documented by Adobe: what the gateway answers for a
	// valid token lacking the API's scope is unknown. Code and message are ours.
	APIErrorNotEntitled = "403027"
	// APIErrorValidation (400) is NOT documented by Adobe: sent for a body that is not a
	// JSON object with a non-empty "prompt" string. Code and message are ours.
	APIErrorValidation = "validation_error"
	// APIErrorMethod (405) is NOT documented by Adobe: sent for any method but POST.
	APIErrorMethod = "method_not_allowed"
)

const (
	apiMessageTokenInvalid  = "Oauth token is not valid" //nolint:gosec // G101: Adobe's documented error message, not a credential
	apiMessageAPIKeyInvalid = "Api Key is invalid"       //nolint:gosec // G101: Adobe's documented error message, not a credential
)

// generateRequest is the part of a Firefly generate request the stand-in looks at.
// Prompt is required; size and contentClass are echoed when they make sense, and every
// other field is ignored.
type generateRequest struct {
	Prompt *string `json:"prompt"`
	Size   *struct {
		Width  int `json:"width"`
		Height int `json:"height"`
	} `json:"size"`
	ContentClass string `json:"contentClass"`
}

// generateResponse is a stand-in for a Firefly generate answer: the same shape (size,
// outputs with seed and image URL, contentClass), none of the substance. The image URL
// is under the reserved .invalid domain, so nothing can fetch it.
type generateResponse struct {
	Size         imageSize        `json:"size"`
	Outputs      []generateOutput `json:"outputs"`
	ContentClass string           `json:"contentClass"`
}

type imageSize struct {
	Width  int `json:"width"`
	Height int `json:"height"`
}

type generateOutput struct {
	Seed  uint32 `json:"seed"`
	Image struct {
		URL string `json:"url"`
	} `json:"image"`
}

// apiRefusal is an error answer of the API stand-in, in the gateway's body shape.
type apiRefusal struct {
	status        int
	code, message string
}

func (rf *apiRefusal) write(w http.ResponseWriter) {
	if rf.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", http.MethodPost)
	}
	writeGatewayError(w, rf.status, rf.code, rf.message)
}

// writeGatewayError writes the API gateway's error body, which the I/O Management API
// shares (managementError has that shape).
func writeGatewayError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, managementError{ErrorCode: code, Message: message})
}

// handleAPI is POST /v3/images/generate.
func (e *Emulator) handleAPI(w http.ResponseWriter, r *http.Request) {
	resp, rf := e.generate(r)
	if rf != nil {
		e.mu.Lock()
		e.stats.APIRejections++
		e.mu.Unlock()
		rf.write(w)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// generate checks, in this order, the method, the bearer token, x-api-key, the token's
// scopes and the body. Only the 401013 and 403003 answers are documented (in
// adobe-ims.md); the order of the checks is not documented by Adobe.
func (e *Emulator) generate(r *http.Request) (generateResponse, *apiRefusal) {
	if r.Method != http.MethodPost {
		return generateResponse{}, &apiRefusal{http.StatusMethodNotAllowed, APIErrorMethod, "use POST"}
	}
	// ServeHTTP has already read the body into memory. json.Unmarshal refuses anything
	// but exactly one JSON value; a JSON null leaves the prompt missing.
	body, err := io.ReadAll(r.Body)
	var req generateRequest
	badBody := err != nil || json.Unmarshal(body, &req) != nil ||
		req.Prompt == nil || strings.TrimSpace(*req.Prompt) == ""

	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	invalid := &apiRefusal{http.StatusUnauthorized, APIErrorTokenInvalid, apiMessageTokenInvalid}
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return generateResponse{}, invalid
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	rec := e.liveLocked(token)
	if rec == nil {
		return generateResponse{}, invalid
	}
	if key := r.Header.Get("X-Api-Key"); key == "" || key != rec.clientID {
		return generateResponse{}, &apiRefusal{http.StatusForbidden, APIErrorAPIKeyInvalid, apiMessageAPIKeyInvalid}
	}
	if !slices.Contains(rec.Scopes, APIScope) {
		return generateResponse{}, &apiRefusal{http.StatusForbidden, APIErrorNotEntitled, "User is not entitled to this API"}
	}
	if badBody {
		return generateResponse{}, &apiRefusal{http.StatusBadRequest, APIErrorValidation,
			`request body must be a JSON object with a non-empty "prompt" string`}
	}
	rec.APICalls++
	rec.LastAPICallAt = e.now()
	e.stats.APIAccepted++
	return standInImage(req), nil
}

// standInImage builds the stand-in answer: a 2048x2048 "photo" unless the request asked
// for another positive size or the "art" content class. Seed and URL are random.
func standInImage(req generateRequest) generateResponse {
	resp := generateResponse{Size: imageSize{Width: 2048, Height: 2048}, ContentClass: "photo"}
	if s := req.Size; s != nil && s.Width > 0 && s.Height > 0 {
		resp.Size = imageSize{Width: s.Width, Height: s.Height}
	}
	if req.ContentClass == "art" {
		resp.ContentClass = "art"
	}
	var out generateOutput
	out.Seed = binary.BigEndian.Uint32(randomBytes(4)) >> 1 // a positive int32, like Firefly's seeds
	out.Image.URL = "https://firefly-emulator.invalid/images/" + newDebugID() + ".jpeg"
	resp.Outputs = []generateOutput{out}
	return resp
}
