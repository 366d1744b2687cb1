# qmd end-to-end tests in a systemd VM (qemu, software CPU). Included from
# the top Makefile; paths are relative to the repository top.
#   make e2e          build/reuse the image, make deb into the share, boot, report
#   make e2e-image    only build (or reuse) the cached VM image
#   make e2e-clean    remove build/e2e (image cache included)
# Select scenarios with E2E_SCENARIOS="1 3"; see test/e2e/README.md.
# (No $(MAKE) in the recipe: `make -n e2e` must not boot a VM; run.sh calls
# make deb itself.)

.PHONY: e2e e2e-image e2e-clean
e2e:
	GO="$(GO)" bash test/e2e/run.sh

e2e-image:
	bash test/e2e/build-image.sh

e2e-clean:
	rm -rf $(or $(E2E_BUILD),build/e2e)
