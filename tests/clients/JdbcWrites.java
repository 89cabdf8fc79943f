// Writes through shardgate's Postgres listener the ways JDBC applications do, and prints
// what the driver answered, a line each, for the integration test to check.
// Run: java -cp postgresql.jar JdbcWrites.java URL USER PASSWORD

import java.io.StringReader;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import org.postgresql.copy.CopyManager;
import org.postgresql.core.BaseConnection;

public class JdbcWrites {
    public static void main(String[] args) throws Exception {
        try (Connection connection = DriverManager.getConnection(args[0], args[1], args[2])) {
            System.out.println("version " + connection.getMetaData().getDatabaseProductVersion());
            try (Statement statement = connection.createStatement()) {
                System.out.println("autocommit " + statement.executeUpdate(
                        "INSERT INTO events (tenant_id, event_type) VALUES ('j0', 'autocommit')"));
            }
            batch(connection);
            connection.setAutoCommit(false);
            batch(connection);
            connection.commit();
            generatedKey(connection);
            connection.commit();
            copy(connection);
            connection.rollback();
            copy(connection);
            connection.commit();
            refused(connection);
            connection.rollback();
            connection.setAutoCommit(true);
            timestamp(connection);
            System.out.println("valid " + connection.isValid(2));
        }
    }

    /** 1,000 rows in one batch, with a cast parameter: one pipeline, one Sync. */
    static void batch(Connection connection) throws SQLException {
        String sql = "INSERT INTO events (tenant_id, event_type, payload) VALUES (?, ?, ?::jsonb)";
        try (PreparedStatement insert = connection.prepareStatement(sql)) {
            for (int i = 0; i < 1000; i++) {
                insert.setString(1, "j" + (i % 7));
                insert.setString(2, "batch");
                insert.setString(3, "{\"i\": " + i + "}");
                insert.addBatch();
            }
            int[] counts = insert.executeBatch();
            System.out.println("batch " + counts.length + " " + counts[0]);
        }
    }

    /** An insert asking for its generated id, as ORMs do. */
    static void generatedKey(Connection connection) throws SQLException {
        String sql = "INSERT INTO events (tenant_id, event_type) VALUES (?, ?)";
        try (PreparedStatement insert = connection.prepareStatement(sql, new String[] {"event_id"})) {
            insert.setString(1, "j9");
            insert.setString(2, "generated");
            insert.executeUpdate();
            try (ResultSet keys = insert.getGeneratedKeys()) {
                keys.next();
                System.out.println("key " + keys.getString(1));
            }
        }
    }

    /** 5,000 CSV rows through CopyManager, inside the connection's block. */
    static void copy(Connection connection) throws Exception {
        StringBuilder csv = new StringBuilder();
        for (int i = 0; i < 5000; i++) {
            csv.append("c").append(i % 11).append(",copy\n");
        }
        CopyManager copy = new CopyManager((BaseConnection) connection);
        long rows = copy.copyIn(
                "COPY events (tenant_id, event_type) FROM STDIN WITH (FORMAT csv)",
                new StringReader(csv.toString()));
        System.out.println("copy " + rows);
    }

    /** A bad value, whose SQLSTATE the driver reports. */
    static void refused(Connection connection) {
        String sql = "INSERT INTO events (tenant_id, event_type, ts) VALUES ('j', 'bad', 'yesterday')";
        try (Statement statement = connection.createStatement()) {
            statement.executeUpdate(sql);
            System.out.println("refused none");
        } catch (SQLException e) {
            System.out.println("refused " + e.getSQLState());
        }
    }

    /** A java.sql.Timestamp parameter, which the driver sends as text of no declared type. */
    static void timestamp(Connection connection) throws SQLException {
        String sql = "INSERT INTO events (tenant_id, event_type, ts) VALUES (?, ?, ?)";
        try (PreparedStatement insert = connection.prepareStatement(sql)) {
            insert.setString(1, "j8");
            insert.setString(2, "timestamp");
            insert.setTimestamp(3, Timestamp.valueOf("2026-05-01 12:00:00"));
            System.out.println("timestamp " + insert.executeUpdate());
        }
    }
}
