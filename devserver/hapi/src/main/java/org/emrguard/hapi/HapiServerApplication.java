package org.emrguard.hapi;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.context.event.ApplicationReadyEvent;
import org.springframework.boot.web.context.WebServerApplicationContext;
import org.springframework.context.ApplicationListener;

/**
 * EMR Guard's second test upstream: HAPI FHIR JPA (R4) over H2 in memory, served at /fhir.
 *
 * <pre>java -Xmx512m -XX:+UseSerialGC -jar hapi.jar --server.port=8091   # 0 picks a free port</pre>
 *
 * When it serves, exactly one line goes to stdout:
 * {@code HAPI FHIR ready on http://127.0.0.1:PORT/fhir} (with the real port for port 0).
 * Everything else (WARN and above) is logged to stderr, see application.properties.
 */
@SpringBootApplication(
    excludeName = {
      // HAPI brings Elasticsearch and Thymeleaf client jars; we use neither.
      "org.springframework.boot.autoconfigure.elasticsearch.ElasticsearchClientAutoConfiguration",
      "org.springframework.boot.autoconfigure.elasticsearch.ElasticsearchRestClientAutoConfiguration",
      "org.springframework.boot.autoconfigure.data.elasticsearch.ElasticsearchDataAutoConfiguration",
      "org.springframework.boot.autoconfigure.data.elasticsearch.ElasticsearchRepositoriesAutoConfiguration",
      "org.springframework.boot.autoconfigure.thymeleaf.ThymeleafAutoConfiguration",
      // HAPI creates its schema through Hibernate (hbm2ddl), not through Flyway migrations.
      "org.springframework.boot.autoconfigure.flyway.FlywayAutoConfiguration",
    })
public class HapiServerApplication {

  public static void main(String[] args) {
    SpringApplication app = new SpringApplication(HapiServerApplication.class);
    app.addListeners(readyLine());
    app.run(args);
  }

  private static ApplicationListener<ApplicationReadyEvent> readyLine() {
    return event -> {
      int port = ((WebServerApplicationContext) event.getApplicationContext()).getWebServer().getPort();
      String host = event.getApplicationContext().getEnvironment().getProperty("server.address", "127.0.0.1");
      System.out.println("HAPI FHIR ready on http://" + host + ":" + port + "/fhir");
      System.out.flush();
    };
  }
}
