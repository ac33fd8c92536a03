# images.mk: container images of every service, one target of deploy/Dockerfile
# each. Include it from the top-level Makefile:
#
#   include deploy/images.mk
#
# then `make images` (all) or `make image-informer`. Uses docker, podman or
# buildah, whichever is found and works; without one it prints a message
# and succeeds, so `make images` never breaks a machine without containers.
#
#   IMAGE_REGISTRY  default ghcr.io/ambient-code/control-plane
#   IMAGE_TAG       default $(VERSION)
#   VERSION         default `git describe --tags --always --dirty`, else "dev"
#   REVISION        default `git rev-parse HEAD`, else "unknown"
#   CONTAINER_TOOL  force docker | podman | buildah

IMAGE_SERVICES ?= informer kube-reconciler runner-manager agui-proxy event-tally memapi
IMAGE_REGISTRY ?= ghcr.io/ambient-code/control-plane
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
IMAGE_TAG ?= $(VERSION)

# The first tool that answers (docker needs a reachable daemon).
CONTAINER_TOOL ?= $(shell \
	if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then echo docker; \
	elif command -v podman >/dev/null 2>&1; then echo podman; \
	elif command -v buildah >/dev/null 2>&1; then echo buildah; fi)

IMAGE_BUILD_ARGS = --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION)

.PHONY: images $(addprefix image-,$(IMAGE_SERVICES))

images: $(addprefix image-,$(IMAGE_SERVICES))

$(addprefix image-,$(IMAGE_SERVICES)): image-%:
ifeq ($(strip $(CONTAINER_TOOL)),)
	@echo "images: no working docker, podman or buildah found; skipping image $*"
else ifeq ($(CONTAINER_TOOL),buildah)
	buildah bud -f deploy/Dockerfile --target $* $(IMAGE_BUILD_ARGS) -t $(IMAGE_REGISTRY)/$*:$(IMAGE_TAG) .
else
	$(CONTAINER_TOOL) build -f deploy/Dockerfile --target $* $(IMAGE_BUILD_ARGS) -t $(IMAGE_REGISTRY)/$*:$(IMAGE_TAG) .
endif
