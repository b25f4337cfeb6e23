// Emits PyO3's interpreter cfgs (e.g. `Py_GIL_DISABLED` for free-threaded
// builds, used by `gil_cell`).
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
