package org.emrguard.hapi;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.JpaSystemProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.server.ElementsSupportEnum;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.interceptor.SearchPreferHandlingInterceptor;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

/** The FHIR REST endpoint: HAPI's RestfulServer over the JPA providers, mounted at /fhir. */
@Configuration
public class FhirServerConfiguration {

  @Bean
  public ServletRegistrationBean<RestfulServer> fhirServlet(
      FhirContext fhirContext,
      ResourceProviderFactory resourceProviders,
      JpaSystemProvider<?, ?> systemProvider,
      IFhirSystemDao<?, ?> systemDao,
      JpaStorageSettings storageSettings,
      ISearchParamRegistry searchParamRegistry,
      IValidationSupport validationSupport,
      DatabaseBackedPagingProvider pagingProvider,
      @Value("${emrguard.fhir.default-page-size:20}") int defaultPageSize,
      @Value("${emrguard.fhir.max-page-size:1000}") int maxPageSize) {
    RestfulServer server = new RestfulServer(fhirContext);
    server.setDefaultResponseEncoding(EncodingEnum.JSON);
    server.setDefaultPrettyPrint(false);
    server.setElementsSupport(ElementsSupportEnum.EXTENDED);
    // Every type's JPA provider (CRUD, search with _include/_revinclude/_has/chains, history,
    // Patient/$everything), then the system level: transaction/batch, system history, $meta.
    server.registerProviders(resourceProviders.createProviders());
    server.registerProvider(systemProvider);
    // Unknown search parameters: 400 (HAPI's default), or ignored with "Prefer: handling=lenient".
    server.registerInterceptor(new SearchPreferHandlingInterceptor(searchParamRegistry));
    // _getpages=<search uuid>&_getpagesoffset=N, served from the stored search in the database.
    pagingProvider.setDefaultPageSize(defaultPageSize);
    pagingProvider.setMaximumPageSize(maxPageSize);
    server.setPagingProvider(pagingProvider);
    server.setServerConformanceProvider(
        new JpaCapabilityStatementProvider(
            server, systemDao, storageSettings, searchParamRegistry, validationSupport));
    ServletRegistrationBean<RestfulServer> registration = new ServletRegistrationBean<>(server, "/fhir/*");
    registration.setName("fhirServlet");
    registration.setLoadOnStartup(1);
    return registration;
  }
}
