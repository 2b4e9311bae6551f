<?php
// An order page rendered from a "database" on the LAN (the lab's line
// protocol: one query line in, rows and a "." line out), for the lab's web
// application look-alike: a request in from the internet, a query out to
// the LAN, answers of other sizes.
header('Content-Type: text/html');
$id = isset($_GET['id']) ? intval($_GET['id']) : 1;
$db = stream_socket_client('tcp://10.77.0.10:5432', $errno, $error, 5);
if (!$db) {
    http_response_code(503);
    exit("database unavailable: $error\n");
}
fwrite($db, "SELECT id, item, price, state FROM orders WHERE id = $id\n");
$rows = [];
while (($line = fgets($db)) !== false && rtrim($line) !== '.') {
    $rows[] = explode('|', rtrim($line));
}
fclose($db);
echo "<html><head><title>Order $id</title></head><body><h1>Order $id</h1><table>";
foreach ($rows as $r) {
    printf('<tr><td>%s</td><td>%s</td><td>%s</td></tr>', htmlspecialchars($r[1]), htmlspecialchars($r[2]), htmlspecialchars($r[3]));
}
echo "</table></body></html>\n";
