fn main() -> std::process::ExitCode {
    coffer::main()
}
