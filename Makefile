# qmd — QM partition supervisor. `make help` lists the targets.

GO        ?= go
PREFIX    ?= /usr
DESTDIR   ?=
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The Podman bindings need these tags (HOST-FACTS.md): "remote" selects the
# API client, containers_image_openpgp avoids the gpgme C library, and the
# graphdriver exclusions keep cgo builds (the race detector) free of btrfs headers.
TAGS      := remote,containers_image_openpgp,exclude_graphdriver_btrfs,exclude_graphdriver_devicemapper
LDFLAGS   := -s -w -X github.com/containers/qmd/internal/daemon.Version=$(VERSION)
BIN       := bin/qmd
UNITDIR   ?= $(PREFIX)/lib/systemd/system
MANDIR    ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
# Debian's zsh searches vendor-completions; Fedora's site-functions (the rpm passes it).
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/vendor-completions
GO_MD2MAN ?= go-md2man
MANPAGES  := build/man/qmd.8 build/man/qmd.toml.5 build/man/org.containers.qmd1.5
PKGDIR    ?= build/pkg

export GOFLAGS := -buildvcs=false

.PHONY: all build test unit integration bench lint fmt install uninstall demo deps clean help
.PHONY: man completions deb rpm packages check-packages

all: build

help: ## show this help
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/qmd (static)
	@echo "==> build $(BIN) ($(VERSION))"
	CGO_ENABLED=0 $(GO) build -tags $(TAGS) -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/qmd

deps: ## install the Debian packages the demo and the tests need (root)
	@bash scripts/install-deps.sh

# Every package runs under the race detector. Those that link the Podman
# bindings need cgo for it, which compiles go-sqlite3 (pulled in by the
# bindings' image cache) once: about a minute on a cold 2-core machine.
PODMAN_FREE = $(shell $(GO) list -tags $(TAGS) -f '{{.ImportPath}} {{join .Deps " "}}' ./... | grep -v 'containers/podman' | cut -d' ' -f1)
PODMAN_PKGS = $(shell $(GO) list -tags $(TAGS) -f '{{.ImportPath}} {{join .Deps " "}}' ./... | grep 'containers/podman' | cut -d' ' -f1)

test: deps build ## install what is needed, then run unit and integration tests (root)
	@echo "==> $$(date -u +%T) unit and real-component tests, race detector (QMD_INTEGRATION=1)"
	QMD_INTEGRATION=1 $(GO) test -race -count=1 -timeout 20m $(PODMAN_FREE)
	@echo "==> $$(date -u +%T) packages linking the Podman bindings (daemon, podman edge), race detector, real Podman service"
	QMD_INTEGRATION=1 QMD_BIN=$(CURDIR)/$(BIN) CGO_ENABLED=1 $(GO) test -race -tags $(TAGS) -count=1 -timeout 20m $(PODMAN_PKGS)
	@echo "==> $$(date -u +%T) Debian package and RPM: build, file lists, maintainer scripts, lintian, rpmlint"
	QMD_INTEGRATION=1 $(MAKE) --no-print-directory check-packages

unit: ## unit tests only (no root, no services)
	$(GO) test -tags $(TAGS) -short -count=1 ./...

integration: deps build ## only the integration tests against a real Podman service
	QMD_INTEGRATION=1 QMD_BIN=$(CURDIR)/$(BIN) $(GO) test -tags $(TAGS) -count=1 -v -timeout 20m ./test/integration/...

# The chaos suite (test/chaos): Podman stopped, killed and slowed, a full
# incident store filesystem, a reload storm, QMD_CHAOS_RESTARTS qmd restarts.
# QMD_CHAOS=1 is set only here, so `make test` skips these tests.
QMD_CHAOS_RESTARTS ?= 1000
.PHONY: chaos
chaos: deps build ## the chaos suite against a real Podman service (root; QMD_CHAOS_RESTARTS=1000)
	@echo "==> $$(date -u +%T) chaos suite, $(QMD_CHAOS_RESTARTS) qmd restarts in the upgrade test"
	QMD_CHAOS=1 QMD_CHAOS_RESTARTS=$(QMD_CHAOS_RESTARTS) QMD_INTEGRATION=1 QMD_BIN=$(CURDIR)/$(BIN) CGO_ENABLED=0 $(GO) test -tags $(TAGS) -count=1 -v -timeout 30m ./test/chaos/...

bench: deps build ## run the benchmarks and print their numbers
	QMD_INTEGRATION=1 QMD_BIN=$(CURDIR)/$(BIN) $(GO) test -tags $(TAGS) -run '^$$' -bench . -benchtime 1x -count 1 -timeout 30m ./test/bench/... 
	$(GO) test -tags $(TAGS) -run '^$$' -bench . -count 1 ./internal/dbusapi/... ./internal/incident/... ./internal/logging/... ./pkg/...

lint: ## gofmt, go vet, staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet -tags $(TAGS) ./...
	@command -v staticcheck >/dev/null || $(GO) install honnef.co/go/tools/cmd/staticcheck@latest
	$$($(GO) env GOPATH)/bin/staticcheck -tags $(TAGS) ./...

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

install: build man completions ## install qmd, its unit, config, D-Bus files, man pages, completions (DESTDIR, PREFIX)
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/qmd
	install -D -m 0644 systemd/qmd.service $(DESTDIR)$(UNITDIR)/qmd.service
	sed -i 's|/usr/bin/qmd|$(PREFIX)/bin/qmd|' $(DESTDIR)$(UNITDIR)/qmd.service
	install -D -m 0644 configs/qmd.toml $(DESTDIR)$(PREFIX)/share/qmd/qmd.toml
	install -D -m 0644 configs/seccomp-no-rt.json $(DESTDIR)$(PREFIX)/share/qmd/seccomp-no-rt.json
	install -D -m 0644 configs/containers.conf $(DESTDIR)$(PREFIX)/share/qmd/containers.conf
	install -d -m 0755 $(DESTDIR)$(PREFIX)/share/qmd/examples
	install -m 0644 configs/examples/*.toml $(DESTDIR)$(PREFIX)/share/qmd/examples/
	install -D -m 0644 systemd/org.containers.qmd1.conf $(DESTDIR)$(PREFIX)/share/dbus-1/system.d/org.containers.qmd1.conf
	install -D -m 0644 systemd/org.containers.qmd1.Manager.xml $(DESTDIR)$(PREFIX)/share/dbus-1/interfaces/org.containers.qmd1.Manager.xml
	install -D -m 0644 systemd/org.containers.qmd1.Partition.xml $(DESTDIR)$(PREFIX)/share/dbus-1/interfaces/org.containers.qmd1.Partition.xml
	install -D -m 0644 systemd/qmd-sysusers.conf $(DESTDIR)$(PREFIX)/lib/sysusers.d/qmd.conf
	install -D -m 0644 systemd/qmd-tmpfiles.conf $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/qmd.conf
	install -D -m 0644 systemd/qmd.catalog $(DESTDIR)$(PREFIX)/lib/systemd/catalog/qmd.catalog
	install -d -m 0755 $(DESTDIR)/etc/qmd/qmd.toml.d
	install -D -m 0644 build/man/qmd.8 $(DESTDIR)$(MANDIR)/man8/qmd.8
	install -D -m 0644 build/man/qmd.toml.5 $(DESTDIR)$(MANDIR)/man5/qmd.toml.5
	install -D -m 0644 build/man/org.containers.qmd1.5 $(DESTDIR)$(MANDIR)/man5/org.containers.qmd1.5
	install -D -m 0644 build/completion/qmd.bash $(DESTDIR)$(BASHCOMPDIR)/qmd
	install -D -m 0644 build/completion/_qmd $(DESTDIR)$(ZSHCOMPDIR)/_qmd

uninstall: ## remove what install put in place
	rm -f $(DESTDIR)$(PREFIX)/bin/qmd $(DESTDIR)$(UNITDIR)/qmd.service \
	  $(DESTDIR)$(PREFIX)/share/qmd/qmd.toml $(DESTDIR)$(PREFIX)/share/qmd/seccomp-no-rt.json \
	  $(DESTDIR)$(PREFIX)/share/qmd/containers.conf $(DESTDIR)$(PREFIX)/share/qmd/examples/*.toml \
	  $(DESTDIR)$(PREFIX)/share/dbus-1/system.d/org.containers.qmd1.conf \
	  $(DESTDIR)$(PREFIX)/share/dbus-1/interfaces/org.containers.qmd1.*.xml \
	  $(DESTDIR)$(PREFIX)/lib/sysusers.d/qmd.conf $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/qmd.conf \
	  $(DESTDIR)$(PREFIX)/lib/systemd/catalog/qmd.catalog \
	  $(DESTDIR)$(MANDIR)/man8/qmd.8 $(DESTDIR)$(MANDIR)/man5/qmd.toml.5 \
	  $(DESTDIR)$(MANDIR)/man5/org.containers.qmd1.5 \
	  $(DESTDIR)$(BASHCOMPDIR)/qmd $(DESTDIR)$(ZSHCOMPDIR)/_qmd

# ---- man pages, shell completion, packages (packaging/README.md)

man: $(MANPAGES) ## build the man pages into build/man (go-md2man; man ./build/man/qmd.8)

build/man/%: docs/man/%.md
	@mkdir -p $(@D)
	@command -v $(GO_MD2MAN) >/dev/null || { echo "$(GO_MD2MAN) not found: apt-get install go-md2man (make deps)"; exit 1; }
	$(GO_MD2MAN) -in $< -out $@

completions: build ## bash and zsh completion scripts into build/completion
	@mkdir -p build/completion
	$(BIN) completion bash > build/completion/qmd.bash
	$(BIN) completion zsh > build/completion/_qmd

deb: build man completions ## build the Debian package into build/pkg (version from git describe)
	rm -rf build/deb $(PKGDIR)/qmd_*.deb && mkdir -p $(PKGDIR)
	$(MAKE) --no-print-directory install DESTDIR=$(CURDIR)/build/deb/root PREFIX=/usr \
	  MANDIR=/usr/share/man BASHCOMPDIR=/usr/share/bash-completion/completions ZSHCOMPDIR=/usr/share/zsh/vendor-completions
	bash packaging/debian/build.sh build/deb/root $(PKGDIR)

rpm: build man completions ## build the RPM into build/pkg (rpmbuild; packaging/rpm/qmd.spec)
	rm -f $(PKGDIR)/qmd-*.rpm
	bash packaging/rpm/build.sh $(PKGDIR)

packages: deb rpm ## both packages

check-packages: packages ## build both packages and check their files and scripts (lintian, rpmlint)
	QMD_PKGDIR=$(CURDIR)/$(PKGDIR) $(GO) test -count=1 ./test/packaging/

demo: deps build ## run qmd in the foreground on a demo partition it creates (root)
	bash scripts/demo.sh

clean: ## remove build output
	rm -rf bin build

include test/e2e/e2e.mk
