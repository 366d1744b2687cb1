# qmd end-to-end tests in a systemd VM (qemu, software CPU). Included from
# the top Makefile; paths are relative to the repository top.
#   make e2e          build/reuse the image, make deb into the share, boot, report
#   make e2e-image    only build (or reuse) the cached VM image
#   make e2e-clean    remove build/e2e (image cache included)
#   make ffi-bench    the freedom-from-interference benchmark (issue #9)
# Select scenarios with E2E_SCENARIOS="1 3"; see test/e2e/README.md.
# (No $(MAKE) in the recipe: `make -n e2e` must not boot a VM; run.sh calls
# make deb itself.)

.PHONY: e2e e2e-image e2e-clean ffi-bench
e2e:
	GO="$(GO)" bash test/e2e/run.sh

# The freedom-from-interference benchmark (issue #9): scenario 13 in its full
# form, every workload under plain containers/qm and under qmd; prints the
# table, keeps the records in build/ffi-bench/.
ffi-bench: ## freedom-from-interference benchmark in the e2e VM (plain qm vs qmd table; root)
	E2E_SCENARIOS="$${E2E_SCENARIOS:-13}" E2E_FFI_MODE=full GO="$(GO)" bash test/e2e/run.sh

e2e-image:
	bash test/e2e/build-image.sh

e2e-clean:
	rm -rf $(or $(E2E_BUILD),build/e2e)
