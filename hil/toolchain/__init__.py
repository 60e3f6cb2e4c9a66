"""The toolchain: DBC -> firmware codec (`codegen`), sources -> board bundles (`build`), and the
bus load of the message set (`busload`)."""
