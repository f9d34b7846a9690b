<?php
// The stack's page: one MariaDB query through mod_php (the benchmark's health check; the
// benchmark creates the samepage user and its table).
$db = new mysqli('localhost', 'samepage', 'samepage', 'samepage', 0, '/run/mysqld/mysqld.sock');
$row = $db->query('SELECT COUNT(*) AS n, SUM(LENGTH(payload)) AS bytes FROM items')->fetch_assoc();
header('Content-Type: text/plain');
echo 'items=' . $row['n'] . ' bytes=' . $row['bytes'] . "\n";
