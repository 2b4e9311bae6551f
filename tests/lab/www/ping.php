<?php
// LAB ONLY: a "host lookup" page with a command-injection flaw, as found on
// appliance admin pages. `host` goes into a shell command line unchecked.
// `cargo xtask lab` serves it on the addresses of a network namespace it
// creates; never deploy it anywhere else.
header('Content-Type: text/plain');
$host = isset($_GET['host']) ? $_GET['host'] : '127.0.0.1';
echo shell_exec('getent hosts ' . $host . ' 2>&1');
