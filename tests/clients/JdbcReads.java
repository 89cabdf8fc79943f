// Reads through shardgate's Postgres listener the ways JDBC applications and BI tools do, and
// prints what the driver answered, a line each, for the integration test to check.
// Run: java -cp postgresql.jar JdbcReads.java URL USER PASSWORD

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;

public class JdbcReads {
    public static void main(String[] args) throws Exception {
        try (Connection connection = DriverManager.getConnection(args[0], args[1], args[2])) {
            metadata(connection);
            schema(connection.getMetaData());
            connection.setAutoCommit(false);
            fetchInPages(connection);
            connection.commit();
            connection.setAutoCommit(true);
            pastThePrepareThreshold(connection);
            unknownTable(connection);
        }
    }

    /** The result columns' names and types, as a BI tool shows them. */
    static void metadata(Connection connection) throws SQLException {
        String sql = "SELECT device, count(*) AS readings, sum(total) AS total, max(at) AS latest FROM readings GROUP BY device ORDER BY device";
        try (PreparedStatement query = connection.prepareStatement(sql);
                ResultSet rows = query.executeQuery()) {
            ResultSetMetaData columns = rows.getMetaData();
            StringBuilder line = new StringBuilder("columns");
            for (int i = 1; i <= columns.getColumnCount(); i++) {
                line.append(' ').append(columns.getColumnLabel(i)).append(':').append(columns.getColumnTypeName(i));
            }
            System.out.println(line);
            while (rows.next()) {
                System.out.println("group " + rows.getString(1) + " " + rows.getLong(2) + " "
                        + rows.getBigDecimal(3) + " " + rows.getTimestamp(4).toInstant());
            }
        }
    }

    /** The declared tables, their columns and keys, as a BI tool's navigator lists them. */
    static void schema(DatabaseMetaData meta) throws SQLException {
        StringBuilder tables = new StringBuilder("tables");
        try (ResultSet rows = meta.getTables(null, "public", "%", new String[] {"TABLE"})) {
            while (rows.next()) {
                tables.append(' ').append(rows.getString("TABLE_NAME"));
            }
        }
        System.out.println(tables);
        StringBuilder columns = new StringBuilder("readings");
        try (ResultSet rows = meta.getColumns(null, "public", "readings", "%")) {
            while (rows.next()) {
                columns.append(' ').append(rows.getString("COLUMN_NAME")).append(':')
                        .append(rows.getString("TYPE_NAME")).append(':').append(rows.getString("IS_NULLABLE"));
            }
        }
        System.out.println(columns);
        try (ResultSet rows = meta.getPrimaryKeys(null, "public", "events")) {
            rows.next();
            System.out.println("key " + rows.getString("COLUMN_NAME"));
        }
    }

    /** A fetch size in a transaction: the driver reads the portal two rows at a time. */
    static void fetchInPages(Connection connection) throws SQLException {
        try (PreparedStatement query = connection.prepareStatement(
                "SELECT seq, day FROM readings WHERE seq >= ? ORDER BY seq")) {
            query.setFetchSize(2);
            query.setInt(1, 2);
            try (ResultSet rows = query.executeQuery()) {
                StringBuilder line = new StringBuilder("paged");
                while (rows.next()) {
                    line.append(' ').append(rows.getInt(1)).append('@').append(rows.getDate(2));
                }
                System.out.println(line);
            }
        }
    }

    /** Past five executions the driver prepares the statement by name and reuses it. */
    static void pastThePrepareThreshold(Connection connection) throws SQLException {
        long total = 0;
        try (PreparedStatement query = connection.prepareStatement(
                "SELECT count(*) FROM readings WHERE device = ?")) {
            for (int i = 0; i < 8; i++) {
                query.setString(1, i % 2 == 0 ? "d1" : "d2");
                try (ResultSet rows = query.executeQuery()) {
                    rows.next();
                    total += rows.getLong(1);
                }
            }
        }
        System.out.println("counted " + total);
    }

    static void unknownTable(Connection connection) {
        try (PreparedStatement query = connection.prepareStatement("SELECT * FROM nope")) {
            query.executeQuery();
            System.out.println("no error");
        } catch (SQLException e) {
            System.out.println("refused " + e.getSQLState());
        }
    }
}
